// Package main is the benchmark's calibration client: it sends a file of prepared requests (one JSON
// object per line: method, path, content type, body) to the API server as fast as it accepts them, from
// N workers sharing one HTTP/2 connection (net/http), and prints what happened as one JSON object.
//
// It is the yardstick the operator's convergence is compared with: the same server-side applies, with
// the least client-side work a program can do (bodies prepared beforehand, no decoding of the answers
// beyond their status). 429 answers are waited out (Retry-After) and sent again; a dropped connection is
// redialled and the request sent again. Everything else is counted by status.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

type request struct {
	Method      string          `json:"method"`
	Path        string          `json:"path"`
	ContentType string          `json:"contentType"`
	Body        json.RawMessage `json:"body"`
}

type result struct {
	Requests          int                `json:"requests"`
	Workers           int                `json:"workers"`
	Protocol          string             `json:"protocol"`
	Seconds           float64            `json:"seconds"`
	RequestsPerSecond float64            `json:"requests_per_second"`
	Statuses          map[string]int     `json:"statuses"`
	Throttled         int                `json:"throttled_429"`
	Resent            int                `json:"resent_after_connection_error"`
	LatencyMs         map[string]float64 `json:"latency_ms"`
	CPUSeconds        float64            `json:"cpu_seconds"`
	Errors            []string           `json:"errors"`
}

const maxAttempts = 10

func main() {
	server := flag.String("server", "", "API server URL, e.g. https://127.0.0.1:6443")
	caFile := flag.String("ca", "", "CA certificate (PEM) of the API server")
	certFile := flag.String("cert", "", "client certificate (PEM)")
	keyFile := flag.String("key", "", "client key (PEM)")
	requestsFile := flag.String("requests", "", "file of requests, one JSON object per line")
	workers := flag.Int("workers", 16, "requests in flight at once")
	http1 := flag.Bool("http1", false, "HTTP/1.1 with a connection per worker instead of HTTP/2")
	flag.Parse()
	if err := run(*server, *caFile, *certFile, *keyFile, *requestsFile, *workers, *http1); err != nil {
		fmt.Fprintln(os.Stderr, "bench-client:", err)
		os.Exit(1)
	}
}

func run(server, caFile, certFile, keyFile, requestsFile string, workers int, http1 bool) error {
	if server == "" || caFile == "" || certFile == "" || keyFile == "" || requestsFile == "" {
		return errors.New("-server, -ca, -cert, -key and -requests are required")
	}
	requests, err := readRequests(requestsFile)
	if err != nil {
		return err
	}
	client, err := newClient(caFile, certFile, keyFile, workers, http1)
	if err != nil {
		return err
	}
	out := result{Requests: len(requests), Workers: workers, Statuses: map[string]int{}, Errors: []string{}}
	out.Protocol = "HTTP/2"
	if http1 {
		out.Protocol = "HTTP/1.1"
	}
	latencies := make([]float64, len(requests))
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	cpuBefore := cpuSeconds()
	started := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for index := range next {
				began := time.Now()
				status, throttled, resent, err := send(client, server, requests[index])
				latencies[index] = float64(time.Since(began).Microseconds()) / 1000
				mu.Lock()
				out.Throttled += throttled
				out.Resent += resent
				if err != nil {
					out.Statuses["error"]++
					if len(out.Errors) < 5 {
						out.Errors = append(out.Errors, err.Error())
					}
				} else {
					out.Statuses[strconv.Itoa(status)]++
				}
				mu.Unlock()
			}
		}()
	}
	for index := range requests {
		next <- index
	}
	close(next)
	wg.Wait()
	out.Seconds = time.Since(started).Seconds()
	out.CPUSeconds = cpuSeconds() - cpuBefore
	if out.Seconds > 0 {
		out.RequestsPerSecond = float64(len(requests)) / out.Seconds
	}
	out.LatencyMs = percentiles(latencies)
	return json.NewEncoder(os.Stdout).Encode(out)
}

func readRequests(path string) ([]request, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var requests []request
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; scanner.Scan(); line++ {
		if len(bytes.TrimSpace(scanner.Bytes())) == 0 {
			continue
		}
		var parsed request
		if err := json.Unmarshal(scanner.Bytes(), &parsed); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		if parsed.Method == "" || parsed.Path == "" {
			return nil, fmt.Errorf("%s line %d: method and path are required", path, line)
		}
		requests = append(requests, parsed)
	}
	return requests, scanner.Err()
}

func newClient(caFile, certFile, keyFile string, workers int, http1 bool) (*http.Client, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s: no certificate found", caFile)
	}
	certificate, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	config := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{certificate}, MinVersion: tls.VersionTLS12}
	transport := &http.Transport{
		TLSClientConfig:     config,
		MaxIdleConnsPerHost: workers,
		ForceAttemptHTTP2:   !http1,
	}
	if http1 {
		// A non-nil empty map turns HTTP/2 off (net/http's documented switch).
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: transport, Timeout: 5 * time.Minute}, nil
}

// send returns the final status, how many 429s were waited out and how many times it was sent again.
func send(client *http.Client, server string, req request) (int, int, int, error) {
	throttled, resent := 0, 0
	for attempt := 1; ; attempt++ {
		var body io.Reader
		if len(req.Body) > 0 {
			body = bytes.NewReader(req.Body)
		}
		httpRequest, err := http.NewRequest(req.Method, server+req.Path, body)
		if err != nil {
			return 0, throttled, resent, err
		}
		httpRequest.Header.Set("Accept", "application/json")
		if req.ContentType != "" {
			httpRequest.Header.Set("Content-Type", req.ContentType)
		}
		response, err := client.Do(httpRequest)
		if err != nil {
			if attempt >= maxAttempts {
				return 0, throttled, resent, err
			}
			resent++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_, _ = io.Copy(io.Discard, response.Body)
		response.Body.Close()
		if response.StatusCode == http.StatusTooManyRequests && attempt < maxAttempts {
			throttled++
			wait, parseErr := strconv.Atoi(response.Header.Get("Retry-After"))
			if parseErr != nil || wait < 1 {
				wait = 1
			}
			time.Sleep(time.Duration(min(wait, 5)) * time.Second)
			continue
		}
		if response.StatusCode >= 400 && response.StatusCode != http.StatusNotFound {
			return response.StatusCode, throttled, resent, fmt.Errorf("%s %s: HTTP %d", req.Method, req.Path, response.StatusCode)
		}
		return response.StatusCode, throttled, resent, nil
	}
}

func percentiles(values []float64) map[string]float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	pick := func(q float64) float64 {
		if len(sorted) == 0 {
			return 0
		}
		return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
	}
	return map[string]float64{"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": pick(1)}
}

// cpuSeconds is this process's user+system CPU time, from /proc (Linux only, like the benchmark).
func cpuSeconds() float64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which is in parentheses and may hold spaces): utime is the 14th field.
	closing := bytes.LastIndexByte(data, ')')
	fields := bytes.Fields(data[closing+2:])
	if len(fields) < 13 {
		return 0
	}
	user, _ := strconv.ParseFloat(string(fields[11]), 64)
	system, _ := strconv.ParseFloat(string(fields[12]), 64)
	return (user + system) / 100 // clock ticks: USER_HZ is 100 on Linux
}
