/*
 * The bench's native floor (path f): the smallest byte relay, in C. One
 * thread, one epoll loop: every accepted connection gets its own upstream
 * connection, and whatever one side sends is written to the other as it is.
 * It parses nothing and encrypts nothing, so (f) - (b) is what any process
 * hop costs on this machine, and comparing it with the same relay in Deno
 * (relay.ts, path g) shows the runtime's share.
 *
 * Usage: relay LISTEN_PORT UPSTREAM_PORT MAX_SECONDS (loopback only; exits
 * by itself after MAX_SECONDS).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 8192

static int peer[MAX_FD];
/* Reading fd reached EOF and its peer's write side was shut down (half-close passed on). */
static unsigned char ended[MAX_FD];

static void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void drop(int ep, int fd) {
  int other = peer[fd];
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  peer[fd] = -1;
  ended[fd] = 0;
  if (other >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, other, NULL);
    close(other);
    peer[other] = -1;
    ended[other] = 0;
  }
}

/* Blocking write of all n bytes: a relay at the bench's load never waits long. */
static int write_all(int fd, const char *p, ssize_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, (size_t)n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: relay LISTEN_PORT UPSTREAM_PORT MAX_SECONDS\n");
    return 2;
  }
  int listen_port = atoi(argv[1]), upstream_port = atoi(argv[2]);
  time_t end = time(NULL) + atoi(argv[3]);
  for (int i = 0; i < MAX_FD; i++) peer[i] = -1;

  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons((unsigned short)listen_port);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(l, 512) != 0) {
    perror("relay: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);

  static char buf[65536];
  struct epoll_event ready[64];
  while (time(NULL) < end) {
    int n = epoll_wait(ep, ready, 64, 1000);
    /* Accepted after the batch: a descriptor closed in this batch must not be
     * reused by a new connection while a stale event for it is still queued. */
    int accept_ready = 0;
    for (int i = 0; i < n; i++) {
      int fd = ready[i].data.fd;
      if (fd == l) {
        accept_ready = 1;
        continue;
      }
      if (peer[fd] < 0) continue; /* dropped earlier in this batch */
      ssize_t r = read(fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) {
        /* EOF: pass the half-close on; the pair closes once both sides ended. */
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        shutdown(peer[fd], SHUT_WR);
        ended[fd] = 1;
        if (ended[peer[fd]]) drop(ep, fd);
        continue;
      }
      if (r < 0 || write_all(peer[fd], buf, r) != 0) drop(ep, fd);
    }
    if (accept_ready) {
      int c = accept(l, NULL, NULL);
      if (c < 0) continue;
      struct sockaddr_in up = addr;
      up.sin_port = htons((unsigned short)upstream_port);
      int u = socket(AF_INET, SOCK_STREAM, 0);
      if (c >= MAX_FD || u < 0 || u >= MAX_FD ||
          connect(u, (struct sockaddr *)&up, sizeof up) != 0) {
        close(c);
        if (u >= 0) close(u);
        continue;
      }
      no_delay(c);
      no_delay(u);
      peer[c] = u;
      peer[u] = c;
      struct epoll_event ec = {.events = EPOLLIN, .data.fd = c};
      struct epoll_event eu = {.events = EPOLLIN, .data.fd = u};
      epoll_ctl(ep, EPOLL_CTL_ADD, c, &ec);
      epoll_ctl(ep, EPOLL_CTL_ADD, u, &eu);
    }
  }
  return 0;
}
