#pragma once
// A real TCP (optionally TLS, OpenSSL in server mode) peer for loop-driven tests. It listens on
// 127.0.0.1 port 0 and serves connections one at a time on its own thread with blocking
// sockets, so the test's uv loop on the main thread talks to a genuinely separate party. It
// records what it saw: connections, completed and failed handshakes, and application bytes
// received (plaintext after the handshake), which lets tests assert that nothing but the
// handshake reached the server.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace miproxy::test {

class TestConn {
 public:
  TestConn(int fd, SSL* ssl, std::atomic<size_t>* counter)
      : fd_(fd), ssl_(ssl), counter_(counter) {}

  // Blocking read of up to |n| bytes; 0 at EOF or on error.
  size_t read(char* buf, size_t n) {
    ssize_t r;
    if (ssl_ != nullptr) {
      r = SSL_read(ssl_, buf, static_cast<int>(n));
    } else {
      r = ::recv(fd_, buf, n, 0);
    }
    if (r <= 0) {
      return 0;
    }
    counter_->fetch_add(static_cast<size_t>(r));
    return static_cast<size_t>(r);
  }

  bool write_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t r;
      if (ssl_ != nullptr) {
        r = SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
      } else {
        r = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      }
      if (r <= 0) {
        return false;
      }
      data.remove_prefix(static_cast<size_t>(r));
    }
    return true;
  }

  // Reads one request: head up to the blank line, then a Content-Length body. false at EOF.
  bool read_request(std::string* head, std::string* body) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) {
        return false;
      }
    }
    *head = buffer_.substr(0, end + 4);
    buffer_.erase(0, end + 4);
    size_t length = 0;
    std::string lower = *head;
    for (char& c : lower) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    size_t pos = lower.find("\r\ncontent-length:");
    if (pos != std::string::npos) {
      length = std::stoul(lower.substr(pos + 17));
    }
    while (buffer_.size() < length) {
      if (!fill()) {
        return false;
      }
    }
    *body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return true;
  }

  // Ends the connection without TLS close_notify (just the TCP FIN).
  void close_without_notify() { skip_notify_ = true; }
  // Ends the connection with a TCP reset.
  void reset() {
    linger lg{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    skip_notify_ = true;
  }
  bool skip_notify() const { return skip_notify_; }

  // Reads until the peer closes.
  void drain_until_eof() {
    char buf[4096];
    while (read(buf, sizeof(buf)) > 0) {
    }
  }

 private:
  bool fill() {
    char buf[16384];
    size_t n = read(buf, sizeof(buf));
    if (n == 0) {
      return false;
    }
    buffer_.append(buf, n);
    return true;
  }

  int fd_;
  SSL* ssl_;
  std::atomic<size_t>* counter_;
  std::string buffer_;
  bool skip_notify_ = false;
};

struct TestServerOptions {
  bool tls = false;
  std::string cert;
  std::string key;
  int max_version = 0;    // e.g. TLS1_2_VERSION; 0 = OpenSSL's default
  int socket_buffer = 0;  // SO_SNDBUF/SO_RCVBUF for accepted sockets; 0 = kernel default
};

class TestServer {
 public:
  using Handler = std::function<void(TestConn&)>;

  TestServer(TestServerOptions options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {
    std::signal(SIGPIPE, SIG_IGN);
    if (options_.tls) {
      ctx_ = SSL_CTX_new(TLS_server_method());
      if (SSL_CTX_use_certificate_chain_file(ctx_, options_.cert.c_str()) != 1 ||
          SSL_CTX_use_PrivateKey_file(ctx_, options_.key.c_str(), SSL_FILETYPE_PEM) != 1) {
        throw std::runtime_error("test server: cannot load certificate");
      }
      if (options_.max_version != 0) {
        SSL_CTX_set_max_proto_version(ctx_, options_.max_version);
      }
      static const unsigned char kSid[] = "miproxy-test";
      SSL_CTX_set_session_id_context(ctx_, kSid, sizeof(kSid) - 1);
    }
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      throw std::runtime_error("test server: cannot listen");
    }
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    if (::pipe(stop_pipe_) != 0) {
      throw std::runtime_error("test server: pipe");
    }
    thread_ = std::thread([this] { run(); });
  }

  ~TestServer() {
    char c = 'x';
    (void)!::write(stop_pipe_[1], &c, 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    if (ctx_ != nullptr) {
      SSL_CTX_free(ctx_);
    }
  }

  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  int handshakes_ok() const { return handshakes_ok_.load(); }
  int handshakes_failed() const { return handshakes_failed_.load(); }
  int connections_done() const { return done_.load(); }
  size_t app_bytes() const { return app_bytes_.load(); }

 private:
  void run() {
    while (true) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        continue;
      }
      if (fds[1].revents != 0) {
        return;
      }
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) {
        continue;
      }
      accepted_++;
      // A stuck client must not hang the test binary forever.
      timeval tv{30, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (options_.socket_buffer > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options_.socket_buffer, sizeof(int));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options_.socket_buffer, sizeof(int));
      }
      SSL* ssl = nullptr;
      if (ctx_ != nullptr) {
        ssl = SSL_new(ctx_);
        SSL_set_fd(ssl, fd);
        ERR_clear_error();
        if (SSL_accept(ssl) != 1) {
          handshakes_failed_++;
          SSL_free(ssl);
          ::close(fd);
          done_++;
          continue;
        }
        handshakes_ok_++;
      }
      TestConn conn(fd, ssl, &app_bytes_);
      handler_(conn);
      if (ssl != nullptr) {
        if (!conn.skip_notify()) {
          SSL_shutdown(ssl);
        }
        SSL_free(ssl);
      }
      ::close(fd);
      done_++;
    }
  }

  TestServerOptions options_;
  Handler handler_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<int> accepted_{0};
  std::atomic<int> handshakes_ok_{0};
  std::atomic<int> handshakes_failed_{0};
  std::atomic<int> done_{0};
  std::atomic<size_t> app_bytes_{0};
};

// Echo handler: sends back everything it reads until EOF.
inline void echo_handler(TestConn& conn) {
  std::vector<char> buf(65536);
  while (true) {
    size_t n = conn.read(buf.data(), buf.size());
    if (n == 0 || !conn.write_all(std::string_view(buf.data(), n))) {
      return;
    }
  }
}

}  // namespace miproxy::test
