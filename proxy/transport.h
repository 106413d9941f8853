#pragma once
// A byte pipe over a libuv stream, plaintext or TLS, with one interface so connection code
// never branches on TLS. Downstream (app → miproxy) connections are plaintext TCP or Unix
// sockets; upstream connections are TLS (or plaintext for local token endpoints).
//
// Ownership: a Transport is created by accept_plain() or Connector, and destroyed only by
// close(), which is idempotent and detaches the handler at once; the object frees itself after
// libuv's close callbacks have run. Handler callbacks always come from the loop, never from
// inside a call the handler made (write errors are reported on a later loop turn).

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>

namespace miproxy::proxy {

class Transport {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // Plaintext arrived; |data| is valid only during the call.
    virtual void on_read(const char* data, size_t len) = 0;
    // The peer finished sending (FIN, or TLS close_notify). No more on_read follows.
    // TLS: a FIN without close_notify is reported here too (many servers skip close_notify);
    // the HTTP layer decides from its framing whether a message was cut short, e.g. a
    // response with no Content-Length read until close.
    virtual void on_eof() = 0;
    // The transport failed (reset, TLS error, write error). The handler must close() it.
    // |uv_code| is the libuv error, or UV_EPROTO for a TLS record or protocol failure.
    virtual void on_error(int uv_code, const std::string& what) = 0;
    // Everything queued by write() has been handed to the kernel. Fires only after a write()
    // returned with write_queue_bytes() > 0, once the queue is empty again; a write() that the
    // kernel took whole produces no on_drain.
    virtual void on_drain() = 0;
  };

  virtual ~Transport() = default;

  // nullptr: park (idle in a pool). While parked, the first event (bytes, EOF, error) is held,
  // not lost: reading pauses there, stale() turns true, and the held events are delivered on a
  // later loop turn once a handler is set (and, for bytes and EOF, reading is on).
  virtual void set_handler(Handler* handler) = 0;
  virtual void read_start() = 0;
  virtual void read_stop() = 0;
  // Queues plaintext. The bytes are copied (or encrypted) before write() returns, so callers
  // may reuse their buffers at once. Backpressure is the caller's job: stop producing while
  // write_queue_bytes() is above its limit and resume on on_drain().
  virtual void write(const uv_buf_t* bufs, size_t count) = 0;
  void write(const char* data, size_t len) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    write(&b, 1);
  }
  // Bytes accepted by write() and not yet handed to the kernel (TLS: ciphertext).
  virtual size_t write_queue_bytes() const = 0;
  // Abortive for anything still queued: wait for on_drain first to flush. TLS sends
  // close_notify (best effort, one non-blocking write) when nothing is queued.
  virtual void close() = 0;
  virtual bool is_closing() const = 0;

  // True once bytes, EOF or an error arrived while no handler was set: a pool should discard
  // such a transport (close it) instead of reusing it. Only observed while reading is on, so
  // a pool parks idle transports with read_start() in effect.
  virtual bool stale() const { return false; }

  // TLS only: whether the handshake resumed a cached session.
  virtual bool session_reused() const { return false; }
  // The underlying socket's file descriptor (for SO_PEERCRED, tests), or -1.
  virtual int fd() const = 0;
};

// Write-path counters for the calling thread's transports (each loop runs on one thread), for
// metrics and for checking the fast path: most writes should finish inside uv_try_write with
// no copy and no uv_write request. Plain increments, read on the loop's own thread.
struct TransportStats {
  uint64_t try_writes = 0;         // uv_try_write calls (plaintext writes and TLS flushes)
  uint64_t try_write_short = 0;    // ...that left bytes behind (including EAGAIN)
  uint64_t uv_writes = 0;          // uv_write requests started (at most one in flight each)
  uint64_t bytes_copied = 0;       // bytes copied into owned queues because the kernel was full
  uint64_t tls_writes = 0;         // SSL_write calls (each makes one or more records)
  uint64_t tls_flushes = 0;        // TLS ciphertext flushes that found something to send
};
const TransportStats& transport_stats();

// Accepts a pending connection on |server| (a listening uv_tcp_t or uv_pipe_t) into a new
// plaintext Transport on |loop|. Returns nullptr (and logs) if accept fails.
Transport* accept_plain(uv_loop_t* loop, uv_stream_t* server);
// Wraps a socket already accepted (accept4, non-blocking) into a plaintext Transport on |loop|,
// which owns |fd| from then on. Returns nullptr (fd closed, logged) on failure.
Transport* adopt_plain(uv_loop_t* loop, int fd, bool tcp);

struct TlsClientOptions {
  std::string server_name;  // SNI and host-name (or IP) verification
  std::string ca_file;      // "" = the system store (OpenSSL default verify paths)
  int min_version = 0x0303; // TLS1_2_VERSION; anything lower is raised to it
  // When set (40 hex digits, any case, ':' and spaces ignored), chain and name verification
  // are replaced by an exact SHA-1 match of the server's leaf certificate (Service Fabric).
  std::string pinned_sha1;
};

struct ConnectError {
  enum class Kind { DNS, CONNECT, TLS_VERIFY, TLS_HANDSHAKE, TIMEOUT };
  Kind kind = Kind::CONNECT;
  std::string message;  // e.g. "certificate verify failed: self-signed certificate (host x)"
};

// Connects to upstreams from one loop. Keeps one SSL_CTX per (ca_file, min_version, pin) and
// a client session cache per (host, port) so reconnects resume TLS sessions; each context's
// cache holds at most max_sessions peers (least recently used dropped first). Not thread-safe:
// each worker owns one. connect() and cancel() are virtual only so that tests and fuzzers can
// stand in a fake upstream (Worker::set_connector); one indirect call per new connection.
class Connector {
 public:
  explicit Connector(uv_loop_t* loop);
  // Cancels connects still in flight (their |done| is not called). Transports already handed
  // out stay valid and may outlive the Connector.
  virtual ~Connector();
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  using Done = std::function<void(std::expected<Transport*, ConnectError>)>;

  // Resolves |host| (DNS name or IP literal), connects, and when |tls| is non-null performs
  // the handshake and verification before |done| sees the transport. Nothing is written to
  // the socket before verification succeeds except the TLS handshake itself. |done| runs
  // exactly once on the loop (never inside connect()) unless cancel(id) is called first.
  // |timeout| covers resolve + connect + handshake (0: none). Addresses are tried in resolver
  // order until one connects. TLS: SNI is sent for DNS names only; the name (or IP literal)
  // in |tls->server_name|, or |host| when that is empty, is verified; ca_file is read once
  // per context and cached for the Connector's life. The transport comes back with reading
  // stopped and no handler. Errors: DNS (resolve), CONNECT (every address failed),
  // TLS_VERIFY ("certificate verify failed: <reason> (<name>)"), TLS_HANDSHAKE (protocol
  // version, alerts, unreadable ca_file, peer closed), TIMEOUT.
  virtual uint64_t connect(const std::string& host, uint16_t port, const TlsClientOptions* tls,
                           std::chrono::milliseconds timeout, Done done);
  virtual void cancel(uint64_t id);

  // Bounds each context's session cache (limits.max_tls_sessions); applies at once.
  void set_max_sessions(size_t max_sessions);
  // Sessions cached now, over all contexts (tests).
  size_t cached_sessions() const;

  // Counters for tests and metrics: successful TLS handshakes (full and resumed), and how
  // many of those resumed a cached session.
  uint64_t handshakes() const { return handshakes_; }
  uint64_t resumed_handshakes() const { return resumed_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t handshakes_ = 0;
  uint64_t resumed_ = 0;
  friend struct ConnectorAccess;
};

}  // namespace miproxy::proxy
