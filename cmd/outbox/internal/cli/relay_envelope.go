package cli

import (
	"flag"

	"github.com/fitiq/outbox/sink"
)

// envelopeOpts are the relay's --envelope and --cloudevents-source: what every sink
// puts an event in.
type envelopeOpts struct {
	name   string // as given
	format sink.EnvelopeFormat
	source string
}

func (o *envelopeOpts) register(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "envelope", string(sink.EnvelopeOutbox), "what a message carries: outbox (the outbox's JSON envelope), cloudevents (a CloudEvents 1.0 JSON document, structured mode) or cloudevents-binary (the payload, attributes in the transport's headers)")
	fs.StringVar(&o.source, "cloudevents-source", "", "with a CloudEvents --envelope, the events' source attribute, a URI-reference (default "+sink.DefaultCloudEventsSource+")")
}

// validate checks the flags and sets format.
func (o *envelopeOpts) validate() error {
	f, err := sink.ParseEnvelopeFormat(o.name)
	if err != nil {
		return usagef("--envelope: %v", err)
	}
	o.format = f
	if o.source != "" && !f.CloudEvents() {
		return usagef("--cloudevents-source is for --envelope cloudevents or cloudevents-binary (--envelope is %s)", f)
	}
	if o.source != "" {
		if err := sink.CheckSource(o.source); err != nil {
			return usagef("--cloudevents-source: %v", err)
		}
	}
	return nil
}
