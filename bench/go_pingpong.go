// The eBPF recorder's Go workload: 64 bytes written on one end of a loopback TCP connection and
// read on the other, N times (a write and a read per iteration, through Go's netpoller), as
// bench/poll_pingpong.c's `blocking` mode does in C. Prints ns per iteration.
//
// Usage: go_pingpong N
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	accepted := make(chan net.Conn)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	b := <-accepted
	msg, buf := make([]byte, 64), make([]byte, 64)
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := a.Write(msg); err != nil {
			panic(err)
		}
		if _, err := io.ReadFull(b, buf); err != nil {
			panic(err)
		}
	}
	fmt.Printf("%.1f\n", float64(time.Since(start).Nanoseconds())/float64(n))
}
