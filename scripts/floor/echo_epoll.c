#define _GNU_SOURCE
// Minimal single-threaded epoll echo server: the floor any echo implementation is measured against.
// The project's own copy of the C reference (echo_epoll.c), for the CI gate: scripts/gate.sh builds it
// into target/floor/ and `harness gate floor` measures its CPU per echo, which every style's CPU per
// request is divided by. Usage: echo_epoll [PORT] (default 9100), on 127.0.0.1; stops on SIGTERM.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 9100;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1; setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4096)) { perror("bind"); return 1; }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[1024]; char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 1024, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, 0, 0, SOCK_NONBLOCK)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
        continue;
      }
      for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) { ssize_t w = 0; while (w < r) { ssize_t k = write(fd, buf + w, r - w); if (k <= 0) break; w += k; } if (r < (ssize_t)sizeof buf) break; }
        else if (r == 0 || errno != EAGAIN) { close(fd); break; }
        else break;
      }
    }
  }
}
