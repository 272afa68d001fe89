package postgres

// The append hint: an idle relay polls the log's head faster for a moment after an
// appender of its process wrote to the log in a transaction of its own (AppendTx
// outside Log.Transact, with no Log.Committed after the commit), because a commit is
// likely to follow within milliseconds. The relay cannot be told of that commit: the
// caller commits its own transaction, and AppendTx sends no NOTIFY and does not ask
// for the transaction's ID (RETURNING costs each append a few percent of a two-row
// transaction). At the usual HeadPollInterval such a commit is found half an interval
// later on average; polled every logAppendPollEvery, sooner.
//
// The faster polls last until a step of the relay has read events after the append,
// or for logAppendPollFor at most, and only while the relay waits: a relay that is
// reading finds the commit at its next step anyway. Transact's transactions need no
// hint: Transact wakes the relays after its commit. Nothing is sent to the database
// for the hint itself; each faster poll is the head poll's usual statement.

import (
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// logAppendPollEvery is how often an idle relay polls the head after an append
	// of its process.
	logAppendPollEvery = 250 * time.Microsecond
	// logAppendPollFor is how long after an append it does so at most.
	logAppendPollFor = 20 * time.Millisecond
)

// appended records an append in tx for the relays of this process, unless tx is
// Transact's, which wakes them itself once committed.
func (l *Log) appended(tx pgx.Tx) {
	if _, own := l.held(tx); own {
		return
	}
	l.appendedAt.Store(time.Now().UnixNano())
	l.appends.Wake(nil, true)
}

// appendPollEvery is the head poll's interval for a relay that polls every every and
// whose last step that read events began at read: logAppendPollEvery while an append
// of this process since read is younger than logAppendPollFor, every otherwise.
func (l *Log) appendPollEvery(every time.Duration, read time.Time) time.Duration {
	at := l.appendedAt.Load()
	if at == 0 || every <= logAppendPollEvery || at <= read.UnixNano() {
		return every
	}
	if time.Since(time.Unix(0, at)) >= logAppendPollFor {
		return every
	}
	return logAppendPollEvery
}
