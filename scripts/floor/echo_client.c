// The project's own copy of the C reference client (echo_client.c): scripts/floor/build.sh builds it
// into target/floor/, and scripts/echo-floor.sh measures our generator against it.
// Closed-loop echo client: C connections, each with one 64-byte message in flight; prints round trips per second.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  int port = atoi(argv[1]), conns = atoi(argv[2]); double secs = atof(argv[3]); int size = argc > 4 ? atoi(argv[4]) : 64;
  int ep = epoll_create1(0); int one = 1;
  char msg[65536]; memset(msg, 'x', size); msg[size - 1] = '\n';
  int *got = calloc(conns + 1024, sizeof(int));
  for (int i = 0; i < conns; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(s, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    write(s, msg, size);
  }
  long done = 0; double t0 = now(), end = t0 + secs; char buf[65536]; struct epoll_event evs[1024];
  while (now() < end) {
    int n = epoll_wait(ep, evs, 1024, 100);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) continue;
      got[fd] += r;
      while (got[fd] >= size) { got[fd] -= size; done++; write(fd, msg, size); }
    }
  }
  printf("%.0f round trips/s (%d conns, %d B)\n", done / (now() - t0), conns, size);
  return 0;
}
