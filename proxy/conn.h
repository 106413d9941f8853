#pragma once
// Internals: one downstream HTTP/1.1 connection (ClientConn) and the forwarding of one request
// to its upstream (Exchange). A ClientConn serves requests strictly one at a time: pipelined
// requests wait in the read buffer (parser paused) until the previous response is complete,
// which answers them in order.
//
// Lifetimes: the worker owns ClientConns; a ClientConn owns its current Exchange. Neither is
// deleted inside one of its own callbacks: ClientConn::close() hands the object to the worker
// for deletion on the next loop turn, and a finished Exchange is parked until the next request
// or the connection's deletion.

#include <llhttp.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <string>

#include "auth/token.h"
#include "proxy/errors.h"
#include "proxy/http1.h"
#include "proxy/server.h"
#include "proxy/strict_http.h"
#include "proxy/transport.h"

namespace miproxy::proxy {

class Worker;
class Exchange;

using SteadyClock = std::chrono::steady_clock;

class ClientConn : public Transport::Handler {
 public:
  ClientConn(Worker& worker, Transport* transport, const BoundListener& listener);
  ~ClientConn() override;

  void start();
  // Idempotent; the object is deleted by the worker on a later loop turn.
  void close();
  // Worker drain: close now if idle, else after the current response.
  void drain();
  bool idle() const { return !ex_ && head_bytes_ == 0; }

  // Transport::Handler (downstream socket).
  void on_read(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int code, const std::string& what) override;
  void on_drain() override;

  // Called by the Exchange.
  Transport* transport() { return transport_; }
  void pause_parsing();              // no request byte is consumed until resume_parsing()
  void resume_parsing();             // head sent upstream: let body bytes flow
  void set_body_backpressure(bool paused);
  void exchange_done(bool reusable);  // response fully written to the transport
  // The response already started: log the request with |error_code| and close.
  void exchange_failed_midstream(std::string_view error_code = "UpstreamProtocolError");
  // Answers the current request with miproxy's own JSON error (interface.md) and, when
  // |close| (or the request body was not consumed), closes after the write.
  void respond_error(Error error, const std::string& message, bool close);
  bool client_keep_alive() const { return keep_alive_; }
  bool expects_continue() const { return expect_continue_; }
  // Runs the connection's timer for the current exchange (Exchange::on_response_timeout).
  void arm_response_timer(double seconds);
  void stop_timer();
  int http_minor() const { return http_minor_; }
  Worker& worker() { return worker_; }
  HeaderList& response_headers() { return resp_headers_; }
  std::string& response_reason() { return resp_reason_; }
  std::string& response_out() { return resp_out_; }

  // llhttp trampolines.
  int on_message_begin();
  int on_method_complete();
  int on_url(const char* at, size_t len);
  int on_header_field(const char* at, size_t len);
  int on_header_value(const char* at, size_t len);
  int on_header_value_complete();
  int on_headers_complete();
  int on_body(const char* at, size_t len);
  int on_message_complete();

 private:
  void execute(const char* data, size_t len);
  // Answers a request llhttp or the strict reader refused with 400 (431 for a limit), or just
  // closes when that is all that is left (a response already streaming, an error answered).
  void refuse_malformed(llhttp_errno_t err, std::string reason);
  // The strict reader refused a byte and llhttp has consumed every byte before it.
  void refuse_strict();
  void update_reading();
  bool output_backlogged();  // queued response bytes above the limit (counts the hit)
  void start_timer(double seconds);
  static void on_timer(uv_timer_t* timer);
  void timer_fired();
  void log_request(const Exchange* ex, int status, std::string_view error_code);
  void retire_exchange();
  // After the last response of a connection: close, or first linger when the client may still
  // be sending (its request body unread): half-close, read and discard for
  // limits.lingering_timeout, then close, so the kernel does not answer those bytes with a
  // reset that destroys the response in flight (nginx's lingering close).
  void close_or_linger();
  bool has_request_body() const;
  // Why the request head's framing is refused ("" when it is fine).
  std::string framing_problem() const;
  int start_exchange();

  Worker& worker_;
  Transport* transport_;
  const BoundListener& listener_;
  llhttp_t parser_;
  uv_timer_t* timer_ = nullptr;  // heap-allocated: freed by its own close callback
  bool timer_for_response_ = false;  // armed by the exchange (response timeout)

  // Current request head.
  HeaderList headers_;
  std::string url_;
  size_t head_bytes_ = 0;
  int http_minor_ = 1;
  bool keep_alive_ = true;
  bool expect_continue_ = false;
  SteadyClock::time_point started_{};
  std::string method_;
  std::string log_path_;     // redacted, for the access log
  std::string request_id_;   // x-ms-client-request-id sent upstream

  std::unique_ptr<Exchange> ex_;
  uint64_t bytes_in_ = 0;
  // Reused by every Exchange of this connection (see Exchange::rheaders_).
  HeaderList resp_headers_;
  std::string resp_reason_;
  std::string resp_out_;
  const RouteMetrics* metrics_ = nullptr;  // owned by Metrics for the process lifetime
  std::string pending_;       // bytes read while the parser was paused
  // Every byte read goes through strict_ first; once it refuses one, reading stops, only the
  // bytes before it reach llhttp, and when llhttp has consumed them the request gets its 400.
  StrictRequestReader strict_;
  uint64_t messages_begun_ = 0;  // requests llhttp has begun (the strict reader's numbering)
  bool parse_paused_ = false;
  // Parsing stopped because the client is not reading its responses (queued bytes above
  // limits.max_queued_response_bytes); on_drain resumes it.
  bool wait_drain_ = false;
  bool body_paused_ = false;
  bool reading_ = false;
  bool request_complete_ = false;
  bool close_after_response_ = false;
  bool closed_ = false;
  bool error_answered_ = false;   // miproxy answered this request itself
  bool draining_ = false;
  bool eof_ = false;              // the client finished sending
  bool lingering_ = false;        // answered; discarding what the client still sends
  static constexpr size_t kMaxPendingBytes = 64 * 1024;
  uid_t peer_uid_ = static_cast<uid_t>(-1);
  bool peer_allowed_ = true;
};

// Forwards one request: token, upstream connection (pooled or new, verified TLS), request head
// and body out, response head and body back, with backpressure both ways.
class Exchange : public Transport::Handler {
 public:
  struct Params {
    std::shared_ptr<const Snapshot> snapshot;
    size_t route_index = 0;
    routing::Upstream upstream;
    std::string head_prefix;   // request line + rewritten headers, without Authorization/CRLF
    std::string method;
    bool chunked_body = false;
    bool has_body = false;
    bool head_request = false;
  };
  Exchange(ClientConn& client, Params params);
  ~Exchange() override;

  // Starts token and connection acquisition. Returns true when the request head went out at
  // once (the caller keeps parsing), false when the caller must pause until resume_parsing().
  bool start();
  void send_body(const char* data, size_t len);
  void end_body();
  void client_drained();  // downstream write queue drained: resume upstream reads

  const config::Route& route() const;
  const std::string& token_source() const { return token_source_; }
  int status() const { return status_; }
  bool response_head_sent() const { return response_head_sent_; }
  // The client connection's timer, armed by this exchange, fired: whichever of its deadlines
  // runs now (timer_) has passed.
  void on_response_timeout();
  // The client side is gone or has moved on: close the upstream side (if still held) and
  // ignore any later token, connect or read callbacks.
  void abandon();
  uint64_t bytes_out() const { return bytes_out_; }
  double upstream_ms() const;
  std::string object_id() const { return token_ ? token_->object_id : std::string(); }
  const std::string& service_error() const { return service_error_; }

  // Transport::Handler (upstream socket).
  void on_read(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int code, const std::string& what) override;
  void on_drain() override;

  // llhttp trampolines (response parser).
  int on_message_begin();
  int on_status(const char* at, size_t len);
  int on_header_field(const char* at, size_t len);
  int on_header_value(const char* at, size_t len);
  int on_header_value_complete();
  int on_headers_complete();
  int on_body(const char* at, size_t len);
  int on_message_complete();

 private:
  // What the client connection's timer measures for this exchange, when it runs for it:
  // REQUEST_BODY: the app's request body makes progress (limits.body_stall_timeout, re-armed by
  //   each body chunk and each upstream drain); RESPONSE: the route's response timeout (one
  //   deadline for the head, then each gap between upstream reads); CLIENT_READ: the app takes
  //   the queued response bytes while upstream reads are paused for it (body_stall_timeout).
  enum class Timer { NONE, REQUEST_BODY, RESPONSE, CLIENT_READ };
  void acquire_upstream();
  bool try_send_head();
  void on_token(auth::TokenResult result);
  void on_connected(std::expected<Transport*, ConnectError> result);
  // Answers miproxy's error (closing the client connection after it when |close|).
  void fail(Error error, const std::string& message, bool close = false);
  void upstream_broken(const std::string& what);
  void finish();
  void release_upstream(bool reusable);
  std::shared_ptr<const auth::AccessToken> route_slot_token();
  void request_token();
  void send_discovery_head();
  // Handles a 401 (scope discovery or a CAE challenge); returns true when the response is to
  // be discarded rather than forwarded.
  bool handle_challenge(int status);
  void restart();
  void flush_head();
  void start_response_timer();
  void stop_response_timer();
  // limits.body_stall_timeout for |kind| (REQUEST_BODY or CLIENT_READ).
  void start_stall_timer(Timer kind);
  void on_stall_timeout();
  int count_head_bytes(size_t len);

  ClientConn& client_;
  Params p_;
  std::string pool_key_;
  TlsClientOptions tls_;
  std::shared_ptr<bool> alive_;
  std::shared_ptr<auth::TokenSlot> slot_;
  std::shared_ptr<const auth::AccessToken> token_;
  bool discovering_ = false;     // scope "auto": a bodiless probe for the Bearer challenge
  bool discard_ = false;         // the current response is consumed, not forwarded
  bool restart_ = false;         // after the discarded response: send the request again
  bool challenge_retried_ = false;
  // The failure to answer once the discarded response is read.
  Error deferred_error_ = Error::UPSTREAM_PROTOCOL_ERROR;
  std::string deferred_message_;
  std::string token_source_;
  Transport* up_ = nullptr;
  bool reused_ = false;
  bool retried_ = false;
  uint64_t connect_id_ = 0;
  bool connecting_ = false;
  bool waiting_token_ = false;
  bool head_sent_ = false;
  bool body_bytes_sent_ = false;
  bool request_done_ = false;
  bool response_started_ = false;  // any response byte seen
  bool response_head_sent_ = false;
  bool response_done_ = false;
  bool rechunk_ = false;           // upstream body re-framed as chunked to the client
  bool close_delimited_ = false;   // client body ends at close (HTTP/1.0 client)
  bool upstream_paused_ = false;
  bool done_pending_ = false;
  bool failed_ = false;
  int status_ = 0;
  uint64_t bytes_out_ = 0;
  size_t response_head_bytes_ = 0;  // status line + header fields of the current response
  llhttp_t rparser_;
  // Response buffers live in the ClientConn and are reused by each of its exchanges, so a
  // steady stream of requests does not allocate them anew.
  HeaderList& rheaders_;
  std::string& reason_;
  std::string& out_head_;          // response head (and last chunk) not yet written
  std::string service_error_;      // x-ms-error-code of a 401/403
  Timer timer_ = Timer::NONE;
  size_t stall_queue_bytes_ = 0;   // CLIENT_READ: the app's queue when the timer was armed
  SteadyClock::time_point head_sent_at_{};
  SteadyClock::time_point response_at_{};
};

}  // namespace miproxy::proxy
