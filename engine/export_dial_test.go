package engine

// SetDialControl makes a dial with o call f with each address it tries to
// connect to, in order, before the connect.
func SetDialControl(o *DialOptions, f func(address string)) { o.control = f }
