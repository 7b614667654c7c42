// Command etcd is a minimal single-member etcd for capms's real-cluster tests: the server
// from go.etcd.io/etcd/server/v3/embed, configured by a few flags. It prints "ready" on stdout
// once it serves clients and stops cleanly on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func mustURL(flagName, raw string) url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		log.Fatalf("--%s: %v", flagName, err)
	}
	return *u
}

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd's data (required)")
	clientURL := flag.String("listen-client-urls", "http://127.0.0.1:2379", "URL to serve clients on")
	peerURL := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "URL to serve peers on")
	name := flag.String("name", "default", "member name")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync (tests only: loses data on a crash)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn, error")
	readyTimeout := flag.Duration("ready-timeout", 60*time.Second, "give up if not ready in time")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = *noFsync
	client := mustURL("listen-client-urls", *clientURL)
	peer := mustURL("listen-peer-urls", *peerURL)
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("start etcd: %v", err)
	}
	defer e.Close()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case <-time.After(*readyTimeout):
		e.Server.Stop()
		log.Fatalf("etcd not ready within %s", *readyTimeout)
	case sig := <-sigs:
		log.Printf("%s before ready: stopping", sig)
		return
	}

	select {
	case err := <-e.Err():
		log.Fatalf("etcd: %v", err)
	case sig := <-sigs:
		log.Printf("%s: stopping", sig)
	}
}
