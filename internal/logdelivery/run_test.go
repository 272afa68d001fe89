package logdelivery

import (
	"context"
	"errors"
	"testing"
)

// TestRunnerStopsBetweenSteps: Stop lets the step in flight finish and Run return; a
// second Run is refused while one goes.
func TestRunnerStopsBetweenSteps(t *testing.T) {
	t.Parallel()
	var r Runner
	runCtx, stopping, finish, err := r.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.Start(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second Start: %v, want ErrRunning", err)
	}
	inStep, stepDone := make(chan struct{}), make(chan struct{})
	runDone := make(chan error, 1)
	go func() { // a Run: one step that finishes when told, then waits for a stop
		close(inStep)
		<-stepDone
		err := runCtx.Err()
		<-stopping
		finish()
		runDone <- err
	}()
	<-inStep
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop(context.Background()) }()
	close(stepDone)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("the step's context was cancelled (%v) by a Stop that could wait", err)
	}
	if _, _, finish, err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start after the Run returned: %v", err)
	} else {
		finish()
	}
}

// TestRunnerStopCancelsTheStepWhenItsContextEnds: a Stop whose context has ended cancels
// the step in flight and returns the context's error once Run has returned.
func TestRunnerStopCancelsTheStepWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	var r Runner
	runCtx, _, finish, err := r.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	go func() { // a step that runs until it is cancelled
		<-runCtx.Done()
		finish()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with an ended context: %v, want context.Canceled", err)
	}
	if runCtx.Err() == nil {
		t.Fatal("the step's context was not cancelled")
	}
}

// TestRunnerStopBeforeRun: a Stop without a Run going returns at once, and the next
// Run finds Stopping closed before its first step (a signal that came before the
// goroutine meant to Run had begun); the Run after that one runs as usual.
func TestRunnerStopBeforeRun(t *testing.T) {
	t.Parallel()
	var r Runner
	if err := r.Stop(context.Background()); err != nil {
		t.Fatalf("Stop without a Run: %v", err)
	}
	_, stopping, finish, err := r.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopping:
	default:
		t.Fatal("the Run after a Stop without one: Stopping is open, want it closed before the first step")
	}
	finish()
	_, stopping, finish, err = r.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer finish()
	select {
	case <-stopping:
		t.Fatal("the Run after that: Stopping is closed, want it open until a Stop")
	default:
	}
}
