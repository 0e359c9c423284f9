package engine

// Request details shared between connections.
//
// A connection keeps its request's path, query and subprotocol for
// Conn.Path, RawQuery and Subprotocol. Most connections of a server ask for
// one of a few paths ("/ws", "/echo"), so each loop keeps the connInfo of
// the first infosPerLoop distinct ones it opened and hands the same one to
// every later connection that asked for the same path and subprotocol:
// such a connection pays the 24-byte connAux that points at it, not a
// connInfo and copies of its strings. A request with a query keeps a
// connInfo of its own: queries usually differ per client (a room, a name,
// a token), so sharing them would fill the table with one client's values
// and keep them after that client left. The table is bounded, so clients
// that each ask for a different path cannot grow it; past it, a
// connection keeps a connInfo of its own, as before.

// infosPerLoop bounds the connInfos a loop shares.
const infosPerLoop = 16

// infoFor returns the connInfo for a request, nil for "/" with no query
// or subprotocol, without allocating when the loop already shares one.
// Loop only.
func (lp *loop) infoFor(sub string, path, query []byte) *connInfo {
	if sub == "" && len(query) == 0 && string(path) == "/" {
		return nil
	}
	if len(query) > 0 {
		return &connInfo{subprotocol: sub, path: string(path), rawQuery: string(query)}
	}
	for _, in := range lp.infos {
		if in.subprotocol == sub && in.path == string(path) {
			return in
		}
	}
	in := &connInfo{subprotocol: sub, path: string(path)}
	if len(lp.infos) < infosPerLoop {
		lp.infos = append(lp.infos, in)
	}
	return in
}

// internInfo returns the loop's shared connInfo equal to in (a connInfo
// made off the loop, by Upgrade or Dial), adding in to the table while
// there is room; a request with a query keeps its own. in must carry no
// addresses. Loop only.
func (lp *loop) internInfo(in *connInfo) *connInfo {
	if in.rawQuery != "" {
		return in
	}
	for _, x := range lp.infos {
		if x.subprotocol == in.subprotocol && x.path == in.path {
			return x
		}
	}
	if len(lp.infos) < infosPerLoop {
		lp.infos = append(lp.infos, in)
	}
	return in
}
