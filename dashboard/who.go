package dashboard

import "context"

type whoKey struct{}

func withWho(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, whoKey{}, who)
}

// who is the authenticated name of the requester, for the action log.
func who(ctx context.Context) string {
	s, _ := ctx.Value(whoKey{}).(string)
	return s
}
