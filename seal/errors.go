package seal

import "errors"

// ErrAuthentication means a sealed value did not open: a wrong key under
// its key id, a changed value, or a value moved to another event (the
// event id is authenticated).
var ErrAuthentication = errors.New("sealed value failed authentication (wrong key, tampered value, or another event's value)")

// ErrUnknownKey means the record names a key id the key set lacks: a key
// was removed while records sealed with it are still read.
var ErrUnknownKey = errors.New("unknown encryption key id")

// ErrNotSealed means the record carries no seal headers, or a different
// algorithm.
var ErrNotSealed = errors.New("record is not sealed with " + Algorithm)
