package transport

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sirupsen/logrus"
)

// yamux settings for the virtio-serial transport. Both sides use the same
// values.
const (
	// yamuxMaxStreamWindow is the per-stream receive window (bytes, 4 MiB).
	// A stream's throughput is at most window/RTT; virtio-serial round
	// trips take 12-33 ms under TCG, so yamux's default 256 KiB would cap
	// a stream at roughly 8-20 MB/s, while 4 MiB lets one stream fill the
	// port. The window is also the most a receiver buffers for one stream
	// whose reader stalls (a container not reading its stdin), which
	// bounds guest memory at 4 MiB per such stream.
	yamuxMaxStreamWindow = 4 << 20

	// yamuxKeepAliveInterval is how often each side pings the other. Most
	// deaths are seen at once as EOF on the port; the ping catches a peer
	// that hangs without closing.
	yamuxKeepAliveInterval = 15 * time.Second

	// yamuxWriteTimeout bounds both a frame's wait to be written and a
	// ping's wait for its answer. It is 30 s instead of yamux's 10 s
	// because a TCG guest under load can stall the port for seconds, and a
	// frame may queue behind several window-sized frames of other streams.
	yamuxWriteTimeout = 30 * time.Second

	// yamuxStreamCloseTimeout is how long a half-closed stream waits for
	// the peer's FIN before it is reset (yamux's default).
	yamuxStreamCloseTimeout = 5 * time.Minute

	// yamuxStreamOpenTimeout is how long a stream open waits for the
	// peer's ACK before the session is declared dead (yamux's default).
	yamuxStreamOpenTimeout = 75 * time.Second
)

// yamuxConfig returns the session configuration; yamux's own messages go
// to log at debug level instead of stderr.
func yamuxConfig(log *logrus.Entry) *yamux.Config {
	return &yamux.Config{
		AcceptBacklog:          256,
		EnableKeepAlive:        true,
		KeepAliveInterval:      yamuxKeepAliveInterval,
		ConnectionWriteTimeout: yamuxWriteTimeout,
		MaxStreamWindowSize:    yamuxMaxStreamWindow,
		StreamOpenTimeout:      yamuxStreamOpenTimeout,
		StreamCloseTimeout:     yamuxStreamCloseTimeout,
		Logger:                 yamuxLogger{log},
	}
}

// yamuxLogger routes yamux's log.Logger-style output to logrus at debug
// level: yamux reports every session end, expected or not, as "[ERR]".
type yamuxLogger struct{ e *logrus.Entry }

func (l yamuxLogger) Print(v ...any)                 { l.e.Debug(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.e.Debugf(format, v...) }
func (l yamuxLogger) Println(v ...any)               { l.e.Debug(fmt.Sprintln(v...)) }

var _ interface {
	net.Conn
	CloseWrite() error
} = stream{}

// stream is a yamux stream with CloseWrite, like *vsock.Conn and
// *net.UnixConn. yamux's Close already is a half-close (it sends FIN and
// further reads still return the peer's data until its FIN), so CloseWrite
// is Close.
type stream struct{ *yamux.Stream }

// CloseWrite half-closes the stream: the peer reads io.EOF after the data
// already written, and this side can still read the peer's reply.
func (s stream) CloseWrite() error { return s.Stream.Close() }
