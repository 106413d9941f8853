#pragma once
// Internal to proxy/transport.cc and proxy/tls.cc: the concrete transports behind
// proxy/transport.h. Nothing outside those two files includes this.
//
// StreamTransport owns the libuv stream (TCP or pipe, embedded), the close path, the single
// in-flight uv_write and a lazily initialised timer used to report events on a later loop
// turn. PlainTransport writes plaintext straight to the socket; TlsTransport runs an OpenSSL
// client over two memory BIOs.

#include <openssl/ssl.h>
#include <uv.h>

#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "proxy/transport.h"

namespace miproxy::proxy::detail {

// Size of the per-thread read buffer handed to libuv, and of the per-thread buffer that
// SSL_read decrypts into. One loop runs per thread and libuv calls alloc_cb and read_cb
// back to back, so one buffer per thread serves every connection on that loop: on_read's data
// is valid only during the call, and nothing in on_read can start another read synchronously.
inline constexpr size_t kReadBufferSize = 64 * 1024;
char* thread_read_buffer();
// Write buffers whose capacity grew beyond this during a burst are released once it drains.
inline constexpr size_t kShrinkAbove = 256 * 1024;
char* thread_plain_buffer();
TransportStats& mutable_stats();

class StreamTransport : public Transport {
 public:
  explicit StreamTransport(uv_loop_t* loop);
  StreamTransport(const StreamTransport&) = delete;
  StreamTransport& operator=(const StreamTransport&) = delete;

  // Initialises the embedded handle; exactly one of these is called right after construction.
  // On failure the transport must still be close()d.
  int init_tcp();
  int init_pipe();
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&h_); }
  uv_tcp_t* tcp() { return &h_.tcp; }

  void set_handler(Handler* handler) override;
  bool stale() const override { return stale_; }
  void read_start() override;
  void read_stop() override;
  void close() override;
  bool is_closing() const override { return closing_; }
  int fd() const override;

 protected:
  ~StreamTransport() override;

  virtual void on_stream_read(ssize_t nread, const uv_buf_t* buf) = 0;
  virtual void on_write_done(int status) = 0;
  // Runs on a later loop turn after defer(), unless the transport closed meanwhile.
  virtual void on_deferred() {}
  // Whether events are held for delivery (set_handler() then schedules them).
  virtual bool has_held_events() const { return pending_error_ != 0; }

  // Starts the libuv read loop without touching reading_ (TLS reads during the handshake).
  int raw_read_start();
  // Writes |data| now as far as the socket takes it (uv_try_write); the rest is copied into
  // inflight_ and handed to one uv_write. Only call with no write in flight. Returns false
  // (with the error reported on a later turn) if the socket failed.
  bool send_now(const char* data, size_t len);
  // Starts a uv_write of inflight_ (non-empty). Returns false on failure (reported later).
  bool start_write();
  // Records a failure to be passed to on_error on a later loop turn; further writes are
  // ignored.
  void fail_later(int uv_code, std::string what);
  // Reports a failure now (only from loop callbacks, never from a call the handler made).
  void fail_now(int uv_code, const std::string& what);
  void defer();

  uv_loop_t* loop_;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h_;
  uv_write_t write_req_;
  uv_timer_t defer_timer_;
  bool defer_init_ = false;
  bool handle_init_ = false;
  Handler* handler_ = nullptr;
  bool closing_ = false;
  bool reading_ = false;     // the handler wants on_read
  bool writing_ = false;     // a uv_write of inflight_ is in flight
  bool failed_ = false;      // on_error was (or will be) reported
  bool drain_owed_ = false;  // write() left bytes queued: on_drain is due when they are sent
  bool stale_ = false;       // an event arrived while parked (no handler)
  std::string inflight_;     // bytes owned by the in-flight uv_write
  int pending_error_ = 0;
  std::string pending_error_what_;
  int open_handles_ = 0;

 private:
  static void alloc_cb(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void write_cb(uv_write_t* req, int status);
  static void close_cb(uv_handle_t* handle);
  static void defer_cb(uv_timer_t* timer);
  // One of the callbacks above threw (base/guard.h caught and logged it).
  void callback_threw();
};

class PlainTransport final : public StreamTransport {
 public:
  explicit PlainTransport(uv_loop_t* loop) : StreamTransport(loop) {}
  void read_start() override;
  void write(const uv_buf_t* bufs, size_t count) override;
  size_t write_queue_bytes() const override { return inflight_.size() + pending_.size(); }

 protected:
  void on_stream_read(ssize_t nread, const uv_buf_t* buf) override;
  void on_write_done(int status) override;
  void on_deferred() override;
  bool has_held_events() const override;

 private:
  std::string pending_;  // queued while a uv_write is in flight; sent by the next one
  std::string held_;     // bytes that arrived while parked
  bool held_eof_ = false;
};

// Client sessions remembered per peer, so a reconnect resumes instead of a full handshake.
// Shared by a Connector's context entry and every TLS transport made from it, because TLS 1.3
// tickets arrive after the handshake, possibly after the Connector is gone. Bounded: with a
// "https://{host}" route every upstream host the apps name adds a peer, so past |max_entries|
// the least recently used session is dropped (counted as limits.max_tls_sessions).
class SessionCache {
 public:
  explicit SessionCache(size_t max_entries = kDefaultMaxEntries) : max_(max_entries) {}
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;
  ~SessionCache();
  static constexpr size_t kDefaultMaxEntries = 1024;
  // Returns a borrowed session (or nullptr); SSL_set_session takes its own reference. A hit
  // makes the peer the most recently used.
  SSL_SESSION* get(const std::string& key);
  // Takes ownership of |session|'s reference.
  void put(const std::string& key, SSL_SESSION* session);
  // Lowers (or raises) the bound; entries beyond it are dropped now, oldest first.
  void set_max_entries(size_t max_entries);
  size_t size() const { return index_.size(); }

 private:
  void evict_to(size_t n);
  using Lru = std::list<std::pair<std::string, SSL_SESSION*>>;  // most recently used first
  size_t max_;
  Lru lru_;
  std::unordered_map<std::string, Lru::iterator> index_;
};

// Builds the client SSL_CTX for |options| (already normalised pin). Returns nullptr and fills
// |error| on failure (unreadable ca_file).
SSL_CTX* make_client_ctx(const std::string& ca_file, int min_version, const std::string& pin,
                         std::string* error);
// Lower-case hex without ':' and spaces; "" if |pin| is not 40 hex digits after that.
std::string normalize_pin(const std::string& pin);

class TlsTransport final : public StreamTransport {
 public:
  class HandshakeListener {
   public:
    virtual ~HandshakeListener() = default;
    // Called once from the loop (a read callback) when the handshake succeeded (|error| is
    // nullptr) or failed. The listener may close() the transport inside the call.
    virtual void on_handshake(TlsTransport* transport, const ConnectError* error) = 0;
  };

  // |host| is what the caller connected to; options.server_name (or |host|) is verified.
  TlsTransport(uv_loop_t* loop, SSL_CTX* ctx, std::shared_ptr<SessionCache> cache,
               std::string cache_key, const TlsClientOptions& options, const std::string& host);

  // Call once after the TCP connect succeeded.
  void start_handshake(HandshakeListener* listener);

  void read_start() override;
  void read_stop() override;
  void write(const uv_buf_t* bufs, size_t count) override;
  size_t write_queue_bytes() const override;
  void close() override;
  bool session_reused() const override;

  // Used by OpenSSL callbacks in tls.cc.
  static TlsTransport* from_ssl(SSL* ssl);
  static int bio_read(BIO* bio, char* out, size_t len, size_t* read);
  static int bio_write(BIO* bio, const char* data, size_t len, size_t* written);
  static long bio_ctrl(BIO* bio, int cmd, long num, void* ptr);
  void store_session(SSL_SESSION* session);
  bool check_pin(X509* leaf);

 protected:
  ~TlsTransport() override;
  void on_stream_read(ssize_t nread, const uv_buf_t* buf) override;
  void on_write_done(int status) override;
  void on_deferred() override;
  bool has_held_events() const override;

 private:
  void cycle();
  bool peek_parked();
  void do_handshake();
  void handshake_failed(ConnectError error);
  void clear_out();
  void enc_out();
  void deliver_eof();

  SSL* ssl_ = nullptr;
  // Ciphertext from the peer. While a read callback runs, the unread part of libuv's buffer is
  // borrowed (ext/ext_len) so SSL reads it in place; whatever is still unread when the callback
  // returns is copied into |own|.
  struct CipherIn {
    const char* ext = nullptr;
    size_t ext_len = 0;
    std::string own;
    size_t own_off = 0;
    size_t pending() const { return ext_len + own.size() - own_off; }
  } in_;
  // Ciphertext to the peer, appended by SSL (a write never blocks) and flushed by enc_out().
  std::string enc_;
  std::shared_ptr<SessionCache> cache_;
  std::string cache_key_;
  std::string verify_name_;
  std::string pin_;  // normalised, or ""
  bool pin_mismatch_ = false;
  HandshakeListener* listener_ = nullptr;
  bool handshake_done_ = false;
  bool peer_eof_ = false;
  bool eof_delivered_ = false;
  bool notify_held_ = false;  // close_notify arrived while parked
  int cycle_depth_ = 0;
};

}  // namespace miproxy::proxy::detail
