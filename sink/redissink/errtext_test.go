package redissink_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/redissink"
)

// A server that answers the add script with an error reply of NUL bytes, control
// sequences, invalid UTF-8 and half a megabyte: the sink's error reads as text a
// store can keep (valid UTF-8, no control characters, at most outbox.MaxErrorLength
// bytes), and is still Redis's error underneath, retried.
func TestHostileErrorRepliesGiveStorableText(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hostile := "-ERR \x00\xff\xfe\x1b[31m<script>\r" + strings.Repeat("\xc3\x28 junk \x07", 512<<10/9) + "\r\n"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					name, err := readRESPCommand(r)
					if err != nil {
						return
					}
					reply := hostile
					if name == "HELLO" { // as a Redis before 6: the client goes on in RESP2
						reply = "-ERR unknown command 'HELLO'\r\n"
					}
					if _, err := io.WriteString(c, reply); err != nil {
						return
					}
				}
			}()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1})
	defer rdb.Close()
	s, err := redissink.New(rdb, redissink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Handle(context.Background(), outbox.Event{ID: "e1", Type: "a", EntityID: "1", Attempts: 1})
	var rerr redis.Error
	if err == nil || outbox.IsPermanent(err) || !errors.As(err, &rerr) {
		t.Fatalf("Handle = %v; want Redis's error, retried", err)
	}
	text := err.Error()
	if !utf8.ValidString(text) || len(text) > outbox.MaxErrorLength || strings.ContainsFunc(text, unicode.IsControl) {
		t.Fatalf("error text %q (%d bytes): want valid UTF-8, no control characters, at most %d bytes", text, len(text), outbox.MaxErrorLength)
	}
	if !strings.Contains(text, "ERR") || !strings.Contains(text, "<script>") {
		t.Fatalf("error text %q: want what Redis answered, cleaned", text)
	}
}

// readRESPCommand reads one command (an array of bulk strings) and returns its name.
func readRESPCommand(r *bufio.Reader) (string, error) {
	var n int
	if _, err := fmt.Fscanf(r, "*%d\r\n", &n); err != nil {
		return "", err
	}
	var name string
	for i := range n {
		var size int
		if _, err := fmt.Fscanf(r, "$%d\r\n", &size); err != nil {
			return "", err
		}
		data := make([]byte, size+2)
		if _, err := io.ReadFull(r, data); err != nil {
			return "", err
		}
		if i == 0 {
			name = strings.ToUpper(string(data[:size]))
		}
	}
	return name, nil
}
