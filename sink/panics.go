package sink

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// Panics hands a panic that sarama recovered on one of its own goroutines
// to the sinks running at the time. sarama's hook for that is a package
// variable (sarama.PanicHandler) that names no producer, so only cmd sets
// it, once per process, and passes the same Panics to every sink:
//
//	panics := sink.NewPanics()
//	sarama.PanicHandler = panics.Handle
//	sink.New(cfg, ack, sink.WithPanics(panics))
//
// Without it a panic inside sarama ends the process. Panics in the sink's
// own code that sarama calls (the retry backoff, the partitioner) are
// recovered by the sink itself and need no Panics.
type Panics struct {
	mu   sync.Mutex
	live map[panicker]struct{}
}

// panicker is a running producer (Sink or Txn) that a panic in sarama ends.
type panicker interface{ panicked(*PanicError) }

// NewPanics returns an empty Panics.
func NewPanics() *Panics {
	return &Panics{live: make(map[panicker]struct{})}
}

// Handle ends the Run of every sink running now with a *PanicError: the
// panicking goroutine is gone, and it cannot say which producer it served.
// It never blocks; sarama calls it from the recovering goroutine.
func (p *Panics) Handle(v any) {
	stack := debug.Stack()
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.live {
		s.panicked(&PanicError{Value: v, Stack: stack})
	}
}

func (p *Panics) add(s panicker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[s] = struct{}{}
}

func (p *Panics) remove(s panicker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.live, s)
}

// WithPanics makes the sink end its Run when p reports a panic in sarama.
func WithPanics(p *Panics) Option {
	return func(s *Sink) { s.panics = p }
}

// recoverPanic is deferred by the sink's own callbacks that run on sarama's
// goroutines, where an unrecovered panic would end the process: the panic
// ends this sink's Run instead, and *err (when not nil) reports it to
// sarama.
func (s *Sink) recoverPanic(err *error) {
	if v := recover(); v != nil {
		s.panicked(&PanicError{Value: v, Stack: debug.Stack()})
		if err != nil {
			*err = fmt.Errorf("sink: recovered a panic: %v", v)
		}
	}
}

// panicked reports a panic to Run; only the first one counts.
func (s *Sink) panicked(pe *PanicError) {
	select {
	case s.panicCh <- pe:
	default:
	}
}
