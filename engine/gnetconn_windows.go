package engine

// gnet's Windows connection (connection_windows.go) keeps the net.Conn it
// was given, with the addresses that connection keeps anyway, and no
// sockaddr and no isDatagram field: rewriting its addresses would save
// nothing. trimGnetConn's lookup does not find the fields there, so it
// rewrites nothing: the fallback of gnetconn.go, by design.

// gnetSockaddr stands for the sockaddr type of gnet's Unix connection. No
// field of gnet's Windows connection has this type.
type gnetSockaddr interface{ noSockaddrOnWindows() }
