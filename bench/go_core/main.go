// go_core is the Go original's proxy core, kept as a reference path for
// `deno task bench`: one x/crypto/ssh client per backend, and
// net/http/httputil.ReverseProxy (FlushInterval -1) whose transport dials
// the engine through that client (`ssh.Client.Dial("tcp", "127.0.0.1:port")`).
// Requests go round-robin over the backends. No discovery, health checks,
// retries or logging: the bench compares transports, not features.
//
// Built offline in GOPATH mode against Debian's golang-golang-x-crypto-dev;
// see bench/bench.ts (buildGoCore) and docs/BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

type backend struct {
	client *ssh.Client
	port   int
	auth   string // "Bearer <token>" or ""
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	sshAddr := flag.String("ssh", "", "sshd host:port of the instance")
	user := flag.String("user", "root", "SSH user")
	keyPath := flag.String("key", "", "private key file")
	knownHosts := flag.String("known-hosts", "", "known_hosts file (checked strictly)")
	insecure := flag.Bool("insecure", false, "accept any host key (bench only)")
	backends := flag.String("backends", "", "engine ports inside the instance, comma-separated")
	tokens := flag.String("tokens", "", "instance tokens, comma-separated, one per backend (optional)")
	keepalive := flag.Duration("keepalive", 10*time.Second, "SSH keepalive interval")
	flag.Parse()

	if *sshAddr == "" || *keyPath == "" || *backends == "" {
		log.Fatal("need -ssh, -key and -backends")
	}
	pem, err := os.ReadFile(*keyPath)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		log.Fatal(err)
	}
	var hostKey ssh.HostKeyCallback
	switch {
	case *insecure:
		hostKey = ssh.InsecureIgnoreHostKey()
	case *knownHosts != "":
		hostKey, err = knownhosts.New(*knownHosts)
		if err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatal("need -known-hosts or -insecure")
	}
	cfg := &ssh.ClientConfig{
		User:            *user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKey,
		Timeout:         15 * time.Second,
	}

	var toks []string
	if *tokens != "" {
		toks = strings.Split(*tokens, ",")
	}
	var bs []*backend
	for i, p := range strings.Split(*backends, ",") {
		port, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			log.Fatalf("bad backend port %q", p)
		}
		// One SSH connection per engine, as vastproxy has one per instance.
		client, err := ssh.Dial("tcp", *sshAddr, cfg)
		if err != nil {
			log.Fatalf("ssh %s: %v", *sshAddr, err)
		}
		go keepAlive(client, *keepalive)
		b := &backend{client: client, port: port}
		if i < len(toks) && toks[i] != "" {
			b.auth = "Bearer " + toks[i]
		}
		bs = append(bs, b)
	}

	// Host "b<i>" names backend i, so the transport keeps one idle pool per backend.
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			i, err := strconv.Atoi(strings.TrimPrefix(host, "b"))
			if err != nil || i < 0 || i >= len(bs) {
				return nil, fmt.Errorf("unknown backend %q", addr)
			}
			return bs[i].client.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(bs[i].port)))
		},
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	var next uint64
	proxy := &httputil.ReverseProxy{
		Director: func(r *http.Request) {
			i := int(atomic.AddUint64(&next, 1)-1) % len(bs)
			r.URL.Scheme = "http"
			r.URL.Host = "b" + strconv.Itoa(i)
			r.Host = "127.0.0.1:" + strconv.Itoa(bs[i].port)
			r.Header.Del("Authorization")
			if bs[i].auth != "" {
				r.Header.Set("Authorization", bs[i].auth)
			}
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      log.New(os.Stderr, "go_core: ", log.LstdFlags),
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	fmt.Printf("go_core listening on %s, %d backends\n", ln.Addr(), len(bs))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	for _, b := range bs {
		b.client.Close()
	}
}

// keepAlive sends keepalive@openssh.com every interval and closes the client
// after 3 unanswered ones, like vastproxy's keepaliveCountMax.
func keepAlive(c *ssh.Client, every time.Duration) {
	missed := 0
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		done := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				return // connection closed
			}
			missed = 0
		case <-time.After(every):
			missed++
			if missed >= 3 {
				log.Printf("ssh keepalive timed out")
				c.Close()
				return
			}
		}
	}
}
