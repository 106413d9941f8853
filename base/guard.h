#pragma once
// The one policy at the trampolines: no C++ exception may unwind into libuv, llhttp or OpenSSL
// (C code: unwinding through it is undefined, in practice std::terminate, which ends the
// process for every app on the host). Every callback those libraries call runs its body through
// guard::run() or guard::parser_call(); a throw is caught there, logged once with where it
// happened, counted, and reported to the caller as "failed" so the owner of that connection can
// close it or answer 500 and the loop keeps serving everyone else.
//
// Cost on the happy path: a try block (zero-cost with the Itanium ABI) around an inlined
// lambda; nothing is allocated unless something was thrown.

#include <atomic>
#include <cstdint>
#include <exception>

namespace miproxy::guard {

// Logs one error line {"msg":"internal error: exception caught","where":|where|,"what":...}
// for the exception being handled and counts it. Call only from a catch block. Never throws.
void report_current(const char* where) noexcept;

// Exceptions caught so far by this process (all threads).
uint64_t caught() noexcept;

// Runs |f|; true when it returned normally, false when it threw (the throw was reported).
template <class F>
bool run(const char* where, F&& f) noexcept {
  try {
    f();
    return true;
  } catch (...) {
    report_current(where);
    return false;
  }
}

// For an llhttp callback: |f|'s int result, or -1 when it threw. llhttp then stops with a
// callback error (HPE_USER or HPE_CB_*), so llhttp_execute returns an error and the owner takes
// its parse-error path for that connection.
template <class F>
int parser_call(const char* where, F&& f) noexcept {
  try {
    return f();
  } catch (...) {
    report_current(where);
    return -1;
  }
}

}  // namespace miproxy::guard
