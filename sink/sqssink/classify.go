package sqssink

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/fitiq/outbox"
)

// ReasonKeyUnusable is the Reason of a hold whose cause is the queue's or topic's KMS
// key: disabled, deleted, or not usable by these credentials.
const ReasonKeyUnusable = "encryption key unusable"

// The error codes SQS and SNS answer with, by what they mean for the event. SQS's JSON
// protocol may give a code in its query form ("AWS.SimpleQueueService.NonExistentQueue")
// or as a shape name ("QueueDoesNotExist"); both are listed. Codes compare without case.
var (
	// The credentials themselves: every call fails alike.
	credentialCodes = codeSet("InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
		"InvalidAccessKeyId", "ExpiredToken", "ExpiredTokenException", "IncompleteSignature",
		"MissingAuthenticationToken", "InvalidSecurity", "AuthFailure", "RequestExpired", "OptInRequired")
	// The credentials may not use this queue or topic.
	forbiddenCodes = codeSet("AccessDenied", "AccessDeniedException", "AuthorizationError",
		"AWS.SimpleQueueService.AccessDenied")
	missingCodes = codeSet("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue",
		"QueueDeletedRecently", "AWS.SimpleQueueService.QueueDeletedRecently",
		"NotFound", "NotFoundException", "ResourceNotFoundException", "TopicNotFound")
	keyCodes = codeSet("KmsAccessDenied", "KmsDisabled", "KmsInvalidKeyUsage", "KmsInvalidState", "KmsNotFound",
		"KmsOptInRequired", "KMSAccessDenied", "KMSDisabled", "KMSInvalidState", "KMSNotFound", "KMSOptInRequired")
	// The message refused for what it holds: given up when it went alone; a batch call
	// refused so is sent again one message at a time.
	contentCodes = codeSet("InvalidParameterValue", "InvalidParameter", "InvalidMessageContents",
		"AWS.SimpleQueueService.InvalidMessageContents", "MessageTooLong", "InvalidAttributeName",
		"InvalidAttributeValue", "ValidationError", "ValidationException", "ParameterValueInvalid")
	// The batch call's shape refused (never expected: the sink numbers and counts the
	// entries itself): sent again one message at a time.
	batchCodes = codeSet("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong",
		"BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
		"TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
		"InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", "EmptyBatchRequest")
	unsupportedCodes = codeSet("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation",
		"InvalidAction", "UnknownOperationException")
)

func codeSet(codes ...string) map[string]bool {
	m := make(map[string]bool, len(codes))
	for _, c := range codes {
		m[strings.ToLower(c)] = true
	}
	return m
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return strings.ToLower(ae.ErrorCode())
	}
	return ""
}

// refusedContent reports whether a batch call's err refuses the request for what one
// of its messages holds, or for its shape, rather than for the destination.
func refusedContent(err error) bool {
	code := errorCode(err)
	return contentCodes[code] || batchCodes[code]
}

// classify marks err, the failure of a call to the queue or topic, with whose fault it
// is: the destination's (held), the message's (permanent), or none known (retried).
func (s *Sink) classify(err error) error {
	if err == nil {
		return nil
	}
	verb := "send to "
	if !s.t.queue {
		verb = "publish to "
	}
	wrapped := fmt.Errorf("%s%s: %w", verb, s.t.name, err)
	var ce *credentialsError
	if errors.As(err, &ce) {
		return outbox.DestinationFault(outbox.ReasonCredentials, wrapped)
	}
	var missingQueue *sqstypes.QueueDoesNotExist
	var missingTopic *snstypes.NotFoundException
	code := errorCode(err)
	switch {
	case credentialCodes[code]:
		return outbox.DestinationFault(outbox.ReasonCredentials, wrapped)
	case forbiddenCodes[code]:
		return outbox.TargetFault(outbox.ReasonCredentials, s.t.name, wrapped)
	case missingCodes[code], errors.As(err, &missingQueue), errors.As(err, &missingTopic):
		return outbox.TargetFault(outbox.ReasonTargetMissing, s.t.name, wrapped)
	case keyCodes[code]:
		return outbox.TargetFault(ReasonKeyUnusable, s.t.name, wrapped)
	case contentCodes[code], batchCodes[code]:
		return outbox.Permanent(wrapped)
	case unsupportedCodes[code]:
		return outbox.DestinationFault("operation not supported by the endpoint", wrapped)
	case code != "":
		return wrapped // throttled, a server error: it may take the message later
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		// An answer whose code could not be read (not the protocol's form, say).
		switch re.HTTPStatusCode() {
		case http.StatusUnauthorized, http.StatusForbidden:
			return outbox.DestinationFault(outbox.ReasonCredentials, wrapped)
		case http.StatusNotFound:
			// Every call goes to the endpoint's root: a 404 says the endpoint is not
			// an SQS or SNS API at all.
			return outbox.DestinationFault("endpoint not found (HTTP 404)", wrapped)
		}
		return wrapped
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return wrapped // the handler's deadline: the message may have landed
	}
	if outbox.IsUnavailable(err) {
		return outbox.Unavailable(wrapped) // nothing was sent
	}
	return wrapped // a connection cut after the request went out: the message may have landed
}

// entryError is the outcome of one failed entry of a batch call.
func (s *Sink) entryError(f entryResult) error {
	err := s.classify(&smithy.GenericAPIError{Code: f.code, Message: f.message, Fault: fault(f.senderFault)})
	if f.senderFault && !outbox.IsPermanent(err) && !outbox.IsUnavailable(err) {
		// The service says the entry itself is at fault: sent again, it fails again.
		return outbox.Permanent(err)
	}
	return err
}

func fault(sender bool) smithy.ErrorFault {
	if sender {
		return smithy.FaultClient
	}
	return smithy.FaultServer
}

// credentialsError is a failure to get credentials from the SDK's chain: none
// configured, an SSO session expired, a role that cannot be assumed.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "get AWS credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// markCredentials marks the errors of a credentials provider, so that classify can
// tell them from the service's.
type markCredentials struct{ aws.CredentialsProvider }

func (p markCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		err = &credentialsError{err}
	}
	return c, err
}
