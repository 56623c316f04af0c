// A Go net/http client (built with CGO_ENABLED=0: no libc, so no interposer): GET each URL
// given, one connection each, and exit 1 unless every answer is a 200.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, url := range os.Args[1:] {
		r, err := client.Get(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 200 {
			fmt.Fprintln(os.Stderr, url, r.Status)
			os.Exit(1)
		}
	}
}
