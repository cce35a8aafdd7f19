//go:build !unix

package main

import "net"

// peerGone cannot tell on this system: a fast connection's context then
// ends only with the connection.
func peerGone(net.Conn) bool { return false }
