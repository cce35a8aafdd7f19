//go:build unix

package main

import (
	"net"
	"syscall"
)

// peerGone reports whether the other end of c has closed the connection,
// or c is no longer usable, without reading what it may have sent: one
// non-blocking peek at the socket.
func peerGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// 0 bytes without an error is the end of the stream; EAGAIN is a
		// connection with nothing to read, still open.
		gone = err == nil && n == 0 || err != nil && err != syscall.EAGAIN && err != syscall.EINTR
		return true
	})
	return gone || err != nil
}
