package shim

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// ForwardCommand is the shim subcommand QEMU runs (guestfwd "cmd:" form)
// for each guest connection to a network.forwards address:
// `containerd-shim-cc-v2 forward HOST:PORT` joins its stdin/stdout to a TCP
// connection to HOST:PORT. One process per connection, which is what lets
// the guest open many registry connections at once.
const ForwardCommand = "forward"

// Forward connects stdin/stdout to a TCP connection to addr until either
// side closes. It returns the process exit code.
func Forward(addr string) int {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer forward: dial %s: %v\n", addr, err)
		return 1
	}
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(conn, os.Stdin)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(os.Stdout, conn)
		os.Stdout.Close()
		done <- struct{}{}
	}()
	<-done
	<-done
	conn.Close()
	return 0
}
