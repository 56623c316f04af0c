// A Go test suite as `netblame run -- go test ./...` sees it: an httptest server and its client
// in one test process, one endpoint that thinks 120 ms (tests/test_ebpf.py).
package svc

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestEndpoints(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(120 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	for _, p := range []string{"/fast", "/slow", "/fast"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
}
