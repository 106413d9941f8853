// TLS client transport: OpenSSL over two memory BIOs, driven by libuv.
//
// Data flow. The libuv read callback lends its buffer to the read BIO and runs cycle(), which
// either advances the handshake or decrypts with SSL_read into the per-thread plaintext buffer
// (filling it with as many records as are available before one on_read), then flushes; only
// ciphertext left unread when the callback returns is copied. write() encrypts with SSL_write
// into enc_ (the write BIO appends and never blocks) and flushes.
//
// The two BIOs are tiny custom ones rather than BIO_s_mem: a memory BIO's reset clears its
// whole capacity with memset on every flush, and it would need a copy of every read.
//
// Flushing (enc_out). At most one uv_write of ciphertext is in flight. When none is, all of
// enc_ is offered to uv_try_write in place; only what the kernel refuses moves to inflight_
// for a uv_write. Ciphertext produced while that write is in flight stays in enc_ and is
// gathered into the next flush when it completes. In the common case (the socket has room) a
// write() costs one SSL_write per 16 KiB of plaintext and one write(2), with no copy and no
// uv_write request.

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>

#include "base/ascii.h"
#include "base/guard.h"
#include "proxy/metrics.h"
#include "proxy/tls_stream.h"

namespace miproxy::proxy::detail {
namespace {

int ssl_ex_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

std::string last_ssl_error() {
  unsigned long e = ERR_peek_last_error();
  if (e == 0) {
    return "unknown error";
  }
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// TLS 1.2 sessions arrive at the end of the handshake, TLS 1.3 tickets at any time after it.
int new_session_cb(SSL* ssl, SSL_SESSION* session) {
  TlsTransport* t = TlsTransport::from_ssl(ssl);
  if (t == nullptr) {
    return 0;
  }
  // OpenSSL is C: nothing may unwind through it (base/guard.h). Not stored: OpenSSL frees it.
  return guard::run("tls: new session", [&] { t->store_session(session); }) ? 1 : 0;
}

// Replaces chain and name verification when a thumbprint is pinned.
int pin_verify_cb(X509_STORE_CTX* store_ctx, void*) {
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  TlsTransport* t = ssl != nullptr ? TlsTransport::from_ssl(ssl) : nullptr;
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  bool pinned = false;
  if (t != nullptr && leaf != nullptr) {
    guard::run("tls: pin check", [&] { pinned = t->check_pin(leaf); });  // a throw rejects
  }
  if (pinned) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_OK);
    return 1;
  }
  X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_REJECTED);
  return 0;
}

BIO_METHOD* cipher_bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "miproxy cipher");
    BIO_meth_set_read_ex(m, TlsTransport::bio_read);
    BIO_meth_set_write_ex(m, TlsTransport::bio_write);
    BIO_meth_set_ctrl(m, TlsTransport::bio_ctrl);
    BIO_meth_set_create(m, [](BIO* b) {
      BIO_set_init(b, 1);
      return 1;
    });
    BIO_meth_set_destroy(m, [](BIO*) { return 1; });
    return m;
  }();
  return method;
}

// Small buffers of one write() are encrypted as one record instead of one record each.
constexpr size_t kCoalesceLimit = 16 * 1024;

char* thread_coalesce_buffer() {
  thread_local std::unique_ptr<char[]> buffer(new char[kCoalesceLimit]);
  return buffer.get();
}

}  // namespace

// ---- SessionCache --------------------------------------------------------------------------

SessionCache::~SessionCache() {
  for (auto& [key, session] : lru_) {
    SSL_SESSION_free(session);
  }
}

SSL_SESSION* SessionCache::get(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) {
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void SessionCache::put(const std::string& key, SSL_SESSION* session) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    SSL_SESSION_free(it->second->second);
    it->second->second = session;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.emplace_front(key, session);
  index_.emplace(key, lru_.begin());
  evict_to(max_);
}

void SessionCache::set_max_entries(size_t max_entries) {
  max_ = max_entries;
  evict_to(max_);
}

void SessionCache::evict_to(size_t n) {
  while (index_.size() > n && !lru_.empty()) {
    auto& [key, session] = lru_.back();
    SSL_SESSION_free(session);
    index_.erase(key);
    lru_.pop_back();
    count_limit_hit("max_tls_sessions");
  }
}

// ---- contexts ------------------------------------------------------------------------------

std::string normalize_pin(const std::string& pin) {
  std::string out;
  for (char c : pin) {
    if (c == ':' || c == ' ') {
      continue;
    }
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return "";
    }
    out.push_back(ascii_lower(c));
  }
  return out.size() == 40 ? out : "";
}

SSL_CTX* make_client_ctx(const std::string& ca_file, int min_version, const std::string& pin,
                         std::string* error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    *error = "cannot create TLS context: " + last_ssl_error();
    return nullptr;
  }
  // Nothing older than TLS 1.2, whatever the caller asked for.
  SSL_CTX_set_min_proto_version(ctx, std::max(min_version, TLS1_2_VERSION));
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (pin.empty()) {
    ERR_clear_error();
    int ok = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                             : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
    if (ok != 1) {
      *error = "cannot load CA certificates from " +
               (ca_file.empty() ? std::string("the system store") : ca_file) + ": " +
               last_ssl_error();
      SSL_CTX_free(ctx);
      return nullptr;
    }
  } else {
    SSL_CTX_set_cert_verify_callback(ctx, pin_verify_cb, nullptr);
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
  static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn));
  return ctx;
}

// ---- TlsTransport --------------------------------------------------------------------------

TlsTransport::TlsTransport(uv_loop_t* loop, SSL_CTX* ctx, std::shared_ptr<SessionCache> cache,
                           std::string cache_key, const TlsClientOptions& options,
                           const std::string& host)
    : StreamTransport(loop), cache_(std::move(cache)), cache_key_(std::move(cache_key)) {
  ssl_ = SSL_new(ctx);
  BIO* rbio = BIO_new(cipher_bio_method());
  BIO* wbio = BIO_new(cipher_bio_method());
  BIO_set_data(rbio, this);
  BIO_set_data(wbio, this);
  SSL_set_bio(ssl_, rbio, wbio);
  SSL_set_ex_data(ssl_, ssl_ex_index(), this);
  SSL_set_connect_state(ssl_);

  verify_name_ = options.server_name.empty() ? host : options.server_name;
  pin_ = options.pinned_sha1.empty() ? "" : normalize_pin(options.pinned_sha1);
  bool ip = is_ip_literal(verify_name_);
  if (!ip) {
    SSL_set_tlsext_host_name(ssl_, verify_name_.c_str());
  }
  if (pin_.empty()) {
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), verify_name_.c_str());
    } else {
      SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl_, verify_name_.c_str());
    }
  }
  if (cache_ != nullptr) {
    SSL_SESSION* session = cache_->get(cache_key_);
    if (session != nullptr && SSL_SESSION_is_resumable(session) == 1) {
      SSL_set_session(ssl_, session);
    }
  }
}

TlsTransport::~TlsTransport() {
  if (ssl_ != nullptr) {
    SSL_set_ex_data(ssl_, ssl_ex_index(), nullptr);
    SSL_free(ssl_);  // frees both BIOs
  }
}

TlsTransport* TlsTransport::from_ssl(SSL* ssl) {
  return static_cast<TlsTransport*>(SSL_get_ex_data(ssl, ssl_ex_index()));
}

void TlsTransport::store_session(SSL_SESSION* session) {
  if (cache_ != nullptr) {
    cache_->put(cache_key_, session);
  } else {
    SSL_SESSION_free(session);
  }
}

// The read BIO: an empty buffer means "no data yet", never end of stream (EOF comes from
// libuv and is handled in cycle()).
int TlsTransport::bio_read(BIO* bio, char* out, size_t len, size_t* read) {
  auto* t = static_cast<TlsTransport*>(BIO_get_data(bio));
  CipherIn& in = t->in_;
  BIO_clear_retry_flags(bio);
  size_t n = 0;
  if (in.own_off < in.own.size()) {
    n = std::min(len, in.own.size() - in.own_off);
    std::memcpy(out, in.own.data() + in.own_off, n);
    in.own_off += n;
    if (in.own_off == in.own.size()) {
      in.own.clear();
      in.own_off = 0;
    }
  }
  if (n < len && in.ext_len > 0) {
    size_t m = std::min(len - n, in.ext_len);
    std::memcpy(out + n, in.ext, m);
    in.ext += m;
    in.ext_len -= m;
    n += m;
  }
  *read = n;
  if (n == 0) {
    BIO_set_retry_read(bio);
    return 0;
  }
  return 1;
}

// The write BIO: appends to enc_.
int TlsTransport::bio_write(BIO* bio, const char* data, size_t len, size_t* written) {
  auto* t = static_cast<TlsTransport*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  *written = 0;
  // Out of memory must fail the write inside OpenSSL, not unwind through it.
  if (!guard::run("tls: buffer ciphertext", [&] { t->enc_.append(data, len); })) {
    return 0;
  }
  *written = len;
  return 1;
}

long TlsTransport::bio_ctrl(BIO* bio, int cmd, long, void*) {
  auto* t = static_cast<TlsTransport*>(BIO_get_data(bio));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
      return t != nullptr && bio == SSL_get_rbio(t->ssl_) ? static_cast<long>(t->in_.pending()) : 0;
    case BIO_CTRL_WPENDING:
      return t != nullptr && bio == SSL_get_wbio(t->ssl_) ? static_cast<long>(t->enc_.size()) : 0;
    case BIO_CTRL_EOF:
      return 0;
    default:
      return 0;
  }
}

bool TlsTransport::check_pin(X509* leaf) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(leaf, EVP_sha1(), md, &n) != 1 || n != 20) {
    pin_mismatch_ = true;
    return false;
  }
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(40);
  for (unsigned int i = 0; i < n; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  pin_mismatch_ = hex != pin_;
  return !pin_mismatch_;
}

bool TlsTransport::session_reused() const {
  return ssl_ != nullptr && SSL_session_reused(ssl_) == 1;
}

size_t TlsTransport::write_queue_bytes() const { return inflight_.size() + enc_.size(); }

void TlsTransport::start_handshake(HandshakeListener* listener) {
  listener_ = listener;
  int r = raw_read_start();
  if (r != 0) {
    handshake_failed(ConnectError{ConnectError::Kind::TLS_HANDSHAKE,
                                  "TLS handshake with " + verify_name_ + ": " + uv_strerror(r)});
    return;
  }
  cycle();
}

void TlsTransport::on_stream_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    in_.ext = buf->base;
    in_.ext_len = static_cast<size_t>(nread);
    cycle();
    if (in_.ext_len > 0) {
      // Not consumed yet (reading paused, or closing): libuv reuses its buffer, so keep a copy.
      if (!closing_) {
        in_.own.append(in_.ext, in_.ext_len);
      }
      in_.ext = nullptr;
      in_.ext_len = 0;
    }
    return;
  }
  if (nread == 0) {
    return;
  }
  uv_read_stop(stream());
  if (nread == UV_EOF) {
    peer_eof_ = true;
    cycle();
    return;
  }
  int code = static_cast<int>(nread);
  if (!handshake_done_) {
    handshake_failed(ConnectError{ConnectError::Kind::TLS_HANDSHAKE,
                                  "TLS handshake with " + verify_name_ + ": " + uv_strerror(code)});
    return;
  }
  fail_now(code, std::string("read: ") + uv_strerror(code));
}

void TlsTransport::cycle() {
  // Re-entrant calls only ask for one more pass (Node's TLSWrap::Cycle).
  if (++cycle_depth_ > 1) {
    return;
  }
  while (cycle_depth_ > 0 && !closing_) {
    if (!handshake_done_) {
      if (!failed_) {
        do_handshake();
      }
    } else if (reading_ && !failed_) {
      clear_out();
    }
    if (!closing_) {
      enc_out();
    }
    --cycle_depth_;
  }
  cycle_depth_ = 0;
}

void TlsTransport::do_handshake() {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    enc_out();  // the client Finished; a failure here is a handshake failure
    if (failed_ || closing_) {
      return;
    }
    handshake_done_ = true;
    // Anything after the handshake (TLS 1.3 tickets, early data) waits in in_ until the
    // owner calls read_start().
    if (!reading_) {
      uv_read_stop(stream());
    }
    HandshakeListener* l = listener_;
    listener_ = nullptr;
    if (l != nullptr) {
      l->on_handshake(this, nullptr);
    }
    return;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    if (peer_eof_) {
      handshake_failed(
          ConnectError{ConnectError::Kind::TLS_HANDSHAKE,
                       "TLS handshake with " + verify_name_ + ": connection closed by the server"});
    }
    return;
  }
  enc_out();  // the alert, best effort
  ConnectError error;
  long verify = SSL_get_verify_result(ssl_);
  if (!pin_.empty() && pin_mismatch_) {
    error = ConnectError{ConnectError::Kind::TLS_VERIFY,
                         "certificate verify failed: SHA-1 thumbprint does not match the pinned "
                         "value (" +
                             verify_name_ + ")"};
  } else if (verify != X509_V_OK) {
    error = ConnectError{ConnectError::Kind::TLS_VERIFY,
                         std::string("certificate verify failed: ") +
                             X509_verify_cert_error_string(verify) + " (" + verify_name_ + ")"};
  } else {
    error = ConnectError{ConnectError::Kind::TLS_HANDSHAKE,
                         "TLS handshake with " + verify_name_ + " failed: " + last_ssl_error()};
  }
  handshake_failed(std::move(error));
}

void TlsTransport::handshake_failed(ConnectError error) {
  failed_ = true;
  pending_error_ = 0;
  if (!closing_) {
    uv_read_stop(stream());
  }
  HandshakeListener* l = listener_;
  listener_ = nullptr;
  if (l != nullptr) {
    l->on_handshake(this, &error);
  }
}

// Parked (no handler): let OpenSSL process what arrived (session tickets, key updates) without
// consuming application data. Returns true when something is now held for the next handler.
bool TlsTransport::peek_parked() {
  char c;
  ERR_clear_error();
  int r = SSL_peek(ssl_, &c, 1);
  if (r > 0) {
    stale_ = true;  // application bytes wait inside SSL for the next handler
    uv_read_stop(stream());
    return true;
  }
  switch (SSL_get_error(ssl_, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      if (peer_eof_) {
        stale_ = true;
        return true;
      }
      return false;
    case SSL_ERROR_ZERO_RETURN:
      stale_ = true;  // SSL_read keeps reporting it, so the next handler sees on_eof
      notify_held_ = true;
      uv_read_stop(stream());
      return true;
    default:
      uv_read_stop(stream());
      fail_now(UV_EPROTO, "TLS read: " + last_ssl_error());
      return true;
  }
}

bool TlsTransport::has_held_events() const {
  if (StreamTransport::has_held_events()) {
    return true;
  }
  return handshake_done_ && (in_.pending() > 0 || SSL_pending(ssl_) > 0 ||
                             ((peer_eof_ || notify_held_) && !eof_delivered_));
}

void TlsTransport::clear_out() {
  char* out = thread_plain_buffer();
  while (reading_ && !closing_ && !failed_) {
    if (handler_ == nullptr) {
      peek_parked();
      return;
    }
    size_t got = 0;
    int err = SSL_ERROR_NONE;
    while (got < kReadBufferSize) {
      ERR_clear_error();
      int r = SSL_read(ssl_, out + got, static_cast<int>(kReadBufferSize - got));
      if (r <= 0) {
        err = SSL_get_error(ssl_, r);
        break;
      }
      got += static_cast<size_t>(r);
    }
    if (got > 0) {
      handler_->on_read(out, got);
      if (closing_ || !reading_ || handler_ == nullptr) {
        return;  // the rest stays in in_ until read_start() / set_handler()
      }
    }
    switch (err) {
      case SSL_ERROR_NONE:
        continue;  // the buffer filled up; there may be more
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        if (peer_eof_) {
          // TCP FIN without close_notify: reported as EOF; message framing above us decides
          // whether anything was cut short.
          deliver_eof();
        }
        return;
      case SSL_ERROR_ZERO_RETURN:
        deliver_eof();
        return;
      default:
        fail_now(UV_EPROTO, "TLS read: " + last_ssl_error());
        return;
    }
  }
}

void TlsTransport::deliver_eof() {
  if (eof_delivered_) {
    return;
  }
  uv_read_stop(stream());
  if (handler_ == nullptr) {
    stale_ = true;
    return;
  }
  eof_delivered_ = true;
  handler_->on_eof();
}

void TlsTransport::enc_out() {
  if (writing_ || closing_ || (failed_ && handshake_done_)) {
    return;
  }
  if (enc_.empty()) {
    return;
  }
  mutable_stats().tls_flushes++;
  bool ok = send_now(enc_.data(), enc_.size());
  enc_.clear();  // keeps the capacity: the next burst appends without allocating
  if (!ok && !handshake_done_) {
    pending_error_ = 0;
    handshake_failed(ConnectError{
        ConnectError::Kind::TLS_HANDSHAKE,
        "TLS handshake with " + verify_name_ + ": write failed: " + pending_error_what_});
  }
}

void TlsTransport::on_write_done(int status) {
  if (status < 0) {
    if (!handshake_done_) {
      handshake_failed(ConnectError{
          ConnectError::Kind::TLS_HANDSHAKE,
          "TLS handshake with " + verify_name_ + ": write failed: " + uv_strerror(status)});
    } else {
      fail_now(status, std::string("write: ") + uv_strerror(status));
    }
    return;
  }
  enc_out();
  if (!writing_ && enc_.capacity() > kShrinkAbove) {
    std::string().swap(enc_);
  }
  if (!writing_ && drain_owed_ && !failed_ && !closing_) {
    drain_owed_ = false;
    if (handler_ != nullptr) {
      handler_->on_drain();
    }
  }
}

void TlsTransport::write(const uv_buf_t* bufs, size_t count) {
  if (closing_ || failed_ || !handshake_done_) {
    return;
  }
  auto ssl_write_all = [this](const char* p, size_t len) {
    while (len > 0) {
      ERR_clear_error();
      int chunk = static_cast<int>(std::min<size_t>(len, 1u << 30));
      mutable_stats().tls_writes++;
      int r = SSL_write(ssl_, p, chunk);
      if (r <= 0) {
        fail_later(UV_EPROTO, "TLS write: " + last_ssl_error());
        return false;
      }
      p += r;
      len -= static_cast<size_t>(r);
    }
    return true;
  };
  if (count == 1) {
    if (!ssl_write_all(bufs[0].base, bufs[0].len)) {
      return;
    }
  } else {
    char* scratch = thread_coalesce_buffer();
    size_t fill = 0;
    for (size_t i = 0; i < count; ++i) {
      size_t len = bufs[i].len;
      if (fill > 0 && (len >= kCoalesceLimit || fill + len > kCoalesceLimit)) {
        if (!ssl_write_all(scratch, fill)) {
          return;
        }
        fill = 0;
      }
      if (len >= kCoalesceLimit) {
        if (!ssl_write_all(bufs[i].base, len)) {
          return;
        }
      } else {
        std::memcpy(scratch + fill, bufs[i].base, len);
        fill += len;
      }
    }
    if (fill > 0 && !ssl_write_all(scratch, fill)) {
      return;
    }
  }
  enc_out();
  if (write_queue_bytes() > 0) {
    drain_owed_ = true;
  }
}

void TlsTransport::read_start() {
  if (closing_ || reading_) {
    return;
  }
  reading_ = true;
  if (!peer_eof_ && !failed_) {
    int r = raw_read_start();
    if (r != 0 && r != UV_EALREADY) {
      fail_later(r, std::string("read start: ") + uv_strerror(r));
      return;
    }
  }
  if (has_held_events()) {
    defer();  // delivered on a later turn, never inside read_start()
  }
}

void TlsTransport::read_stop() {
  if (closing_) {
    return;
  }
  reading_ = false;
  uv_read_stop(stream());
}

void TlsTransport::on_deferred() {
  if (!reading_ || !handshake_done_ || handler_ == nullptr) {
    return;
  }
  cycle();
  // Reading paused while events were held; resume it unless the peer is done.
  if (reading_ && !closing_ && !failed_ && !peer_eof_ && handler_ != nullptr) {
    int r = raw_read_start();
    if (r != 0 && r != UV_EALREADY) {
      fail_now(r, std::string("read start: ") + uv_strerror(r));
    }
  }
}

void TlsTransport::close() {
  if (closing_) {
    return;
  }
  // close_notify, best effort: only when nothing else is queued, in one non-blocking write.
  if (handshake_done_ && !failed_ && !writing_ && !peer_eof_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);
    if (!enc_.empty()) {
      uv_buf_t b = uv_buf_init(enc_.data(), static_cast<unsigned>(enc_.size()));
      uv_try_write(stream(), &b, 1);
    }
    enc_.clear();
  }
  StreamTransport::close();
}

}  // namespace miproxy::proxy::detail
