#pragma once
// The systemd notification protocol (sd_notify(3)) without libsystemd: one datagram to the
// AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).
// Does nothing when the variable is unset, so a process not started by systemd (or by a unit
// that is not Type=notify) never notices. Errors are ignored: notification is best effort.

#include <string_view>

namespace miproxy::sd {

// Sends |state| (newline-separated "KEY=value" assignments, e.g. "READY=1\nSTATUS=serving").
// Returns true when a datagram was sent.
bool notify(std::string_view state);

}  // namespace miproxy::sd
