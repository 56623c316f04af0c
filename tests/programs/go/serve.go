// A Go net/http server: GET /slow answers after THINK_MS, anything else at once, and closes
// the connection. Writes its pid
// to PIDFILE once listening. Usage: serve PORT THINK_MS PIDFILE
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	think, _ := strconv.Atoi(os.Args[2])
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Duration(think) * time.Millisecond)
		}
		// One request per connection, as tests/programs/http_server.py answers.
		w.Header().Set("Connection", "close")
		w.Write(make([]byte, 2000))
	})
	tmp := os.Args[3] + ".tmp"
	os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())), 0o644)
	os.Rename(tmp, os.Args[3])
	http.Serve(ln, nil)
}
