package main

// Why this file exists: FerretDB v1's SQLite handler runs update, findAndModify and upsert
// as "query, then write back by _id" in separate SQLite transactions (FerretDB issue #3040),
// so concurrent writers to one document lose updates: measured here, 200 concurrent
// {$inc: {n: 1}} on one document left n = 7, and several writers of a revision-checked
// update_one({_id, revision: r}, ...) were all told modified = 1. MongoDB applies each
// single-document write atomically. To get that back, clients talk to this front end,
// which forwards wire-protocol messages to FerretDB (on a private loopback port) one
// command at a time, under one process-wide lock. Fine for development and tests; a slow
// command (or a tailable awaitData getMore) delays all others. Disable with -serialize=false.
//
// The PostgreSQL handler is no different (query, then UPDATE ... WHERE _id, in separate
// transactions): measured there without this front end, 200 concurrent {$inc: {n: 1}} left
// n = 49 and two of 20 racing update_one({_id, rev: 0}, {$set: {rev: 1}}) were both told
// modified = 1. Read-only commands (find, getMore, aggregate, count, ...) cannot take part in
// a lost update, so with -serialize-reads=false they run concurrently with each other (under
// a shared lock) and only everything else runs one at a time.
//
// A lost update needs two writes to one document, so to one collection: with
// -serialize-collections, a write to a named collection (insert, update, delete,
// findAndModify) waits only for writes to a collection of the same name, reads run alongside
// writes (each PostgreSQL statement sees committed rows, old or new, as MongoDB's reads may),
// and only the rest (creating or dropping collections and indexes, anything unrecognised) runs
// alone. The services write to several collections at once, and this lets them. At most
// concurrentWrites such writes run at once: FerretDB holds a pooled connection for each
// matched statement of an update until the command ends (see shared/mongo.py, WRITE_CHUNK),
// and the writes in flight must leave the pool (pool_max_conns) room for everyone else.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"
)

const (
	opMsg          = 2013
	flagMoreToCome = 1 << 1
	maxMessageSize = 48_000_000 + 16*1024 // maxMessageSizeBytes advertised by hello, plus slack
)

type serializer struct {
	backend string // FerretDB's own TCP address
	l       *slog.Logger
	mu      sync.RWMutex // held from sending a request to FerretDB until its reply is read

	// concurrentReads: read-only commands take mu shared, not exclusively.
	concurrentReads bool

	// perCollection: writes to a named collection take mu shared and that collection's lock.
	perCollection bool
	collMu        sync.Mutex
	collLocks     map[string]*sync.Mutex
	writeSlots    chan struct{}

	// times: how long FerretDB took to answer each command, by command and collection, since
	// they were last logged (logTimes, on SIGUSR1). With one command at a time (-serialize,
	// reads too) that is each command's own share of the store's time.
	timesMu sync.Mutex
	times   map[string]*commandTime
}

// commandTime is what commands of one name on one collection took.
type commandTime struct {
	count int
	total time.Duration
}

// concurrentWrites bounds the writes to different collections that run at once.
const concurrentWrites = 4

// collectionWrites lists the commands whose first element names the one collection they write.
var collectionWrites = map[string]bool{
	"insert": true, "update": true, "delete": true, "findAndModify": true, "findandmodify": true,
}

// collectionLock returns the lock of writes to collections of this name (in any database:
// sharing one across databases costs only concurrency).
func (s *serializer) collectionLock(name string) *sync.Mutex {
	s.collMu.Lock()
	defer s.collMu.Unlock()

	if s.collLocks == nil {
		s.collLocks = make(map[string]*sync.Mutex)
	}

	l, ok := s.collLocks[name]
	if !ok {
		l = new(sync.Mutex)
		s.collLocks[name] = l
	}

	return l
}

// readOnly lists the commands that write nothing (their names as sent, case-sensitive).
var readOnly = map[string]bool{
	"find": true, "getMore": true, "aggregate": true, "count": true, "distinct": true,
	"listCollections": true, "listIndexes": true, "listDatabases": true,
	"hello": true, "isMaster": true, "ismaster": true, "ping": true, "buildInfo": true,
	"buildinfo": true, "serverStatus": true, "dbStats": true, "collStats": true,
	"dataSize": true, "explain": true, "getParameter": true, "connectionStatus": true,
	"whatsmyuri": true, "hostInfo": true, "getCmdLineOpts": true, "getLog": true,
}

// serve accepts client connections until ctx is cancelled, then closes them all and returns.
func (s *serializer) serve(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup

	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()

	for {
		client, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.l.Error("accept failed; no longer accepting connections", "error", err)
			}

			break
		}

		wg.Add(1)

		go func() {
			defer wg.Done()
			s.handle(ctx, client)
		}()
	}

	wg.Wait()
}

// handle pairs one client connection with one FerretDB connection.
func (s *serializer) handle(ctx context.Context, client net.Conn) {
	defer client.Close() //nolint:errcheck // nothing to do on error

	backend, err := net.Dial("tcp", s.backend)
	if err != nil {
		s.l.Error("cannot reach FerretDB", "error", err)
		return
	}
	defer backend.Close() //nolint:errcheck // nothing to do on error

	// On shutdown, closing both ends unblocks the reads below.
	stop := context.AfterFunc(ctx, func() {
		_ = client.Close()
		_ = backend.Close()
	})
	defer stop()

	cr, br := bufio.NewReader(client), bufio.NewReader(backend)

	for {
		req, err := readMessage(cr)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.l.Debug("client connection ended", "remote", client.RemoteAddr().String(), "error", err)
			}

			return
		}

		reply, err := s.roundTrip(req, backend, br)
		if err != nil {
			s.l.Debug("FerretDB connection ended", "remote", client.RemoteAddr().String(), "error", err)
			return
		}

		// A request flagged moreToCome (unacknowledged write) expects no reply, but FerretDB
		// answers every request; the reply is dropped so the client's stream stays in step.
		if moreToCome(req) {
			continue
		}

		if _, err = client.Write(reply); err != nil {
			return
		}
	}
}

// roundTrip sends one request to FerretDB and reads its reply, with no other command in flight.
// (FerretDB v1 sends exactly one reply per request and never streams exhaust replies.)
func (s *serializer) roundTrip(req []byte, backend net.Conn, br *bufio.Reader) ([]byte, error) {
	name, collection := command(req)

	switch {
	case s.concurrentReads && readOnly[name]:
		s.mu.RLock()
		defer s.mu.RUnlock()
	case s.perCollection && collectionWrites[name] && collection != "":
		s.mu.RLock()
		defer s.mu.RUnlock()

		l := s.collectionLock(collection)
		l.Lock()
		defer l.Unlock()

		s.writeSlots <- struct{}{}
		defer func() { <-s.writeSlots }()
	default:
		s.mu.Lock()
		defer s.mu.Unlock()
	}

	started := time.Now()

	if _, err := backend.Write(req); err != nil {
		return nil, err
	}

	reply, err := readMessage(br)
	s.record(name, collection, time.Since(started))

	return reply, err
}

// record adds one command's time to what its name and collection took.
func (s *serializer) record(name, collection string, took time.Duration) {
	key := name + " " + collection

	s.timesMu.Lock()
	defer s.timesMu.Unlock()

	if s.times == nil {
		s.times = make(map[string]*commandTime)
	}

	t := s.times[key]
	if t == nil {
		t = new(commandTime)
		s.times[key] = t
	}

	t.count++
	t.total += took
}

// logTimes logs what each command and collection took since the last call, longest first, and
// starts counting afresh.
func (s *serializer) logTimes() {
	s.timesMu.Lock()
	times := s.times
	s.times = nil
	s.timesMu.Unlock()

	keys := make([]string, 0, len(times))
	for k := range times {
		keys = append(keys, k)
	}

	sort.Slice(keys, func(i, j int) bool { return times[keys[i]].total > times[keys[j]].total })

	for _, k := range keys {
		s.l.Info("command time", "command", k, "count", times[k].count, "ms", times[k].total.Milliseconds())
	}
}

// readMessage reads one whole wire-protocol message (16-byte header, then the rest).
func readMessage(r *bufio.Reader) ([]byte, error) {
	var header [16]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}

	size := int(int32(binary.LittleEndian.Uint32(header[0:4])))
	if size < len(header) || size > maxMessageSize {
		return nil, fmt.Errorf("invalid message length %d", size)
	}

	msg := make([]byte, size)
	copy(msg, header[:])

	if _, err := io.ReadFull(r, msg[len(header):]); err != nil {
		return nil, err
	}

	return msg, nil
}

// moreToCome reports whether msg is an OP_MSG with the moreToCome flag bit set.
func moreToCome(msg []byte) bool {
	return len(msg) >= 20 &&
		binary.LittleEndian.Uint32(msg[12:16]) == opMsg &&
		binary.LittleEndian.Uint32(msg[16:20])&flagMoreToCome != 0
}

// command returns the command an OP_MSG runs (the first key of its body section, kind 0) and,
// when that key's value is a string, the value: for the writes, the collection written. ""
// for anything else (which then runs exclusively).
func command(msg []byte) (string, string) {
	if len(msg) < 21 || binary.LittleEndian.Uint32(msg[12:16]) != opMsg {
		return "", ""
	}

	for pos := 20; pos < len(msg); {
		kind := msg[pos]
		pos++

		if pos+4 > len(msg) {
			return "", ""
		}

		size := int(int32(binary.LittleEndian.Uint32(msg[pos : pos+4])))
		if size < 5 || pos+size > len(msg) {
			return "", ""
		}

		switch kind {
		case 0: // body: one BSON document; its first element is the command
			doc := msg[pos : pos+size]
			if doc[4] == 0 { // empty document
				return "", ""
			}

			for i := 5; i < len(doc); i++ {
				if doc[i] == 0 {
					return string(doc[5:i]), stringValue(doc, doc[4], i+1)
				}
			}

			return "", ""
		case 1: // document sequence: size covers itself, the identifier and the documents
			pos += size
		default:
			return "", ""
		}
	}

	return "", ""
}

// stringValue returns the BSON string at doc[at:] when kind is the string type (0x02), else "".
func stringValue(doc []byte, kind byte, at int) string {
	if kind != 0x02 || at+4 > len(doc) {
		return ""
	}

	size := int(int32(binary.LittleEndian.Uint32(doc[at : at+4])))
	if size < 1 || at+4+size > len(doc) {
		return ""
	}

	return string(doc[at+4 : at+4+size-1]) // without the trailing NUL
}
