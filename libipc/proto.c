/* proto.c - framing, naming and descriptor passing of the control protocol. */
#include "proto.h"
#include "sys.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

size_t proto_request_size(uint16_t type)
{
	switch (type) {
	case MSG_HELLO: return sizeof(struct msg_hello);
	case MSG_PUB_OPEN: return sizeof(struct msg_pub_open);
	case MSG_SUB_OPEN: return sizeof(struct msg_sub_open);
	case MSG_EVENT_OPEN: return sizeof(struct msg_event_open);
	case MSG_PUB_CLOSE:
	case MSG_PUB_CONNECT:
	case MSG_SUB_CONNECT:
	case MSG_EVENT_LISTEN:
	case MSG_SUB_CLOSE:
	case MSG_EVENT_CLOSE:
	case MSG_POOLS:
	case MSG_CONNS: return sizeof(struct msg_index);
	case MSG_CONN_READY: return sizeof(struct msg_conn_ready);
	case MSG_POOL_DONE: return sizeof(struct msg_pool_done);
	case MSG_EV_READY: return sizeof(struct msg_push_ev);
	case MSG_READOPT: return sizeof(struct msg_readopt);
	case MSG_EV_READOPT: return sizeof(struct msg_ev_readopt);
	case MSG_PUB_READOPT:
	case MSG_SUB_READOPT:
	case MSG_POOL_READOPT: return sizeof(struct msg_port_readopt);
	case MSG_READOPT_DONE:
	case MSG_STATUS:
	case MSG_MGMT_FD: return sizeof(struct msg_empty);
	default: return 0;
	}
}

static int name_char_ok(char c, int allow_slash)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-' || (allow_slash && c == '/');
}

int proto_name_ok(const char *s, size_t n)
{
	size_t len = strnlen(s, n);

	if (len == 0 || len >= n || len > 63)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!name_char_ok(s[i], 1))
			return 0;
	return 1;
}

enum { TOK_CHAR, TOK_STAR, TOK_DSTAR };

int proto_name_glob(const char *pattern, const char *name)
{
	/* m[i][j]: pattern tokens i.. match name[j..]; filled from the ends,
	 * so the cost is bounded by the name lengths, whatever the stars. */
	bool m[TAKT_NAME_MAX + 1][TAKT_NAME_MAX + 1];
	uint8_t kind[TAKT_NAME_MAX];
	char ch[TAKT_NAME_MAX];
	size_t np = 0, nt = strnlen(name, TAKT_NAME_MAX);

	if (nt == TAKT_NAME_MAX)
		return false;
	for (size_t i = 0; pattern[i] && np < TAKT_NAME_MAX; np++) {
		if (pattern[i] == '*' && pattern[i + 1] == '*') {
			kind[np] = TOK_DSTAR;
			i += 2;
		} else {
			kind[np] = pattern[i] == '*' ? TOK_STAR : TOK_CHAR;
			ch[np] = pattern[i++];
		}
	}
	for (size_t i = np + 1; i-- > 0;)
		for (size_t j = nt + 1; j-- > 0;) {
			if (i == np) {
				m[i][j] = j == nt;
				continue;
			}
			switch (kind[i]) {
			case TOK_CHAR: m[i][j] = j < nt && name[j] == ch[i] && m[i + 1][j + 1]; break;
			case TOK_STAR: m[i][j] = m[i + 1][j] || (j < nt && name[j] != '/' && m[i][j + 1]); break;
			default: m[i][j] = m[i + 1][j] || (j < nt && m[i][j + 1]); break;
			}
		}
	return m[0][0];
}

int proto_service_name_ok(const char *s)
{
	return s && proto_name_ok(s, TAKT_NAME_MAX) && strlen(s) <= PROTO_SERVICE_MAX;
}

int proto_service_topic(const char *name, size_t n, size_t *svc_len, uint64_t *client)
{
	size_t len = strnlen(name, n), k;
	char svc[TAKT_NAME_MAX];
	uint64_t id = 0;
	int kind;

	if (len == n || len < 5 || name[0] != '@' || name[1] != '/')
		return 0;
	if (!strcmp(name + len - 2, "/q")) {
		kind = 'q';
		k = len - 2;
	} else if (len > 21 && !strncmp(name + len - 19, "/r/", 3)) {
		kind = 'r';
		k = len - 19;
		for (size_t i = len - 16; i < len; i++) {
			char c = name[i];

			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
				return 0;
			id = id << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
		}
		if (!id)
			return 0;
	} else {
		return 0;
	}
	if (k - 2 > PROTO_SERVICE_MAX || k <= 2)
		return 0;
	memcpy(svc, name + 2, k - 2);
	svc[k - 2] = 0;
	if (!proto_service_name_ok(svc))
		return 0;
	if (svc_len)
		*svc_len = k - 2;
	if (client)
		*client = id;
	return kind;
}

int proto_domain_ok(const char *s)
{
	size_t len;

	if (!s)
		return 0;
	len = strnlen(s, TAKT_DOMAIN_MAX);
	if (len == 0 || len >= TAKT_DOMAIN_MAX || s[0] == '.')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!name_char_ok(s[i], 0))
			return 0;
	return 1;
}

const char *proto_domain_default(const char *explicit_domain)
{
	const char *env;

	if (explicit_domain)
		return explicit_domain;
	env = getenv("TAKT_DOMAIN");
	return env && *env ? env : "default";
}

/* The runtime directory: $TAKT_RUNTIME_DIR as the operator set it up; for
 * root (a system domain, as a service runs it) PROTO_SYSTEM_DIR; else the
 * user's own. */
static int runtime_dir(char *buf, size_t len, enum proto_dir_kind *ret_kind)
{
	const char *d = getenv("TAKT_RUNTIME_DIR");
	enum proto_dir_kind kind = PROTO_DIR_USER;
	int n;

	if (d && *d) {
		kind = PROTO_DIR_EXPLICIT;
		n = snprintf(buf, len, "%s", d);
	} else if (geteuid() == 0) {
		kind = PROTO_DIR_SYSTEM;
		n = snprintf(buf, len, "%s", PROTO_SYSTEM_DIR);
	} else if ((d = getenv("XDG_RUNTIME_DIR")) && *d) {
		n = snprintf(buf, len, "%s/takt", d);
	} else {
		n = snprintf(buf, len, "/tmp/takt-%u", (unsigned)getuid());
	}
	if (ret_kind)
		*ret_kind = kind;
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int proto_runtime_dir_make(void)
{
	enum proto_dir_kind kind;
	char dir[108];
	struct stat st;
	int r = runtime_dir(dir, sizeof(dir), &kind);

	if (r < 0)
		return r;
	/* The system directory must let every user reach the socket, whose
	 * mode and group decide who may connect; a user's is theirs alone. */
	if (mkdir(dir, kind == PROTO_DIR_SYSTEM ? 0755 : 0700) < 0 && errno != EEXIST)
		return -errno;
	if (kind == PROTO_DIR_EXPLICIT)
		return 0; /* the operator chose it and its permissions */
	/* A default directory someone else created (say /tmp/takt-<uid> made by
	 * another user) must not hold our socket. */
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
		return -EPERM;
	return 0;
}

static int path_in(const char *dir, const char *domain, const char *suffix, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/takt-%s.%s", dir, domain, suffix);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int proto_runtime_path(const char *domain, const char *suffix, char *buf, size_t len)
{
	char dir[108];
	int r = runtime_dir(dir, sizeof(dir), NULL);

	return r < 0 ? r : path_in(dir, domain, suffix, buf, len);
}

void proto_hdr_init(struct proto_hdr *h, uint16_t type, uint32_t size, uint32_t req_id)
{
	h->magic = TAKT_PROTO_MAGIC;
	h->version = TAKT_PROTO_VERSION;
	h->type = type;
	h->size = size;
	h->req_id = req_id;
}

int proto_send(int sock, const void *msg, size_t size, const int *fds, unsigned n_fds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * TAKT_PROTO_MAX_FDS)];
	struct iovec iov = {.iov_base = (void *)msg, .iov_len = size};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (n_fds > TAKT_PROTO_MAX_FDS)
		return -EINVAL;
	if (n_fds) {
		struct cmsghdr *cm;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
	}
	for (;;) {
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);

		if (n >= 0)
			return n == (ssize_t)size ? 0 : -EMSGSIZE;
		if (errno != EINTR)
			return -errno;
	}
}

static unsigned take_fds(struct msghdr *mh, int *fds, unsigned max_fds)
{
	unsigned n = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *in = (int *)CMSG_DATA(cm);

		for (size_t i = 0; i < cnt; i++) {
			int fd;

			memcpy(&fd, in + i, sizeof(fd));
			if (n < max_fds)
				fds[n++] = fd;
			else
				close(fd); /* more than the message may carry: drop, never leak */
		}
	}
	return n;
}

long proto_recv(int sock, void *buf, size_t size, int *fds, unsigned max_fds, unsigned *ret_n_fds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * TAKT_PROTO_MAX_FDS)];
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf)};
	ssize_t n;
	unsigned nf;

	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	nf = take_fds(&mh, fds, max_fds);
	if (ret_n_fds)
		*ret_n_fds = nf;
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		for (unsigned i = 0; i < nf; i++)
			close(fds[i]);
		if (ret_n_fds)
			*ret_n_fds = 0;
		return -EMSGSIZE;
	}
	return n;
}

static int connect_at(const char *path, int *ret_sock)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int s, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		/* a socket left by a killed broker refuses: no broker either */
		r = errno == ECONNREFUSED ? -ENOENT : -errno;
		close(s);
		return r;
	}
	*ret_sock = s;
	return 0;
}

int proto_connect_path(const char *path, int *ret_sock)
{
	return connect_at(path, ret_sock);
}

int proto_connect_at(const char *domain, int *ret_sock, char *ret_path, size_t len)
{
	enum proto_dir_kind kind;
	char dir[108], path[128];
	int r = runtime_dir(dir, sizeof(dir), &kind);

	if (r < 0 || (r = path_in(dir, domain, "sock", path, sizeof(path))) < 0)
		return r;
	r = connect_at(path, ret_sock);
	/* A user's domain first, then the system's of the same name (as the
	 * D-Bus session and system buses): a user reaches a broker run as a
	 * service without setting TAKT_RUNTIME_DIR. */
	if (r == -ENOENT && kind == PROTO_DIR_USER &&
	    path_in(PROTO_SYSTEM_DIR, domain, "sock", path, sizeof(path)) == 0)
		r = connect_at(path, ret_sock);
	if (r == 0 && ret_path && (size_t)snprintf(ret_path, len, "%s", path) >= len) {
		close(*ret_sock);
		return -ENAMETOOLONG;
	}
	return r;
}

int proto_connect(const char *domain, int *ret_sock)
{
	return proto_connect_at(domain, ret_sock, NULL, 0);
}

int proto_is_push(const void *msg, long n)
{
	const struct proto_hdr *h = msg;

	return n >= (long)sizeof(*h) && h->magic == TAKT_PROTO_MAGIC && h->version == TAKT_PROTO_VERSION &&
	       (h->type & PROTO_PUSH_FLAG) && h->size == (uint32_t)n;
}

int proto_reply_check(const struct proto_reply *rep, long n, const struct proto_hdr *req, size_t reply_size)
{
	if (n < (long)sizeof(struct proto_reply) || rep->hdr.magic != TAKT_PROTO_MAGIC ||
	    rep->hdr.version != TAKT_PROTO_VERSION || rep->hdr.req_id != req->req_id ||
	    rep->hdr.type != (req->type | PROTO_REPLY_FLAG) || rep->hdr.size != (uint32_t)n)
		return -EPROTO;
	if (rep->status < 0)
		return rep->status;
	return (size_t)n == reply_size ? 0 : -EPROTO;
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/* Milliseconds left until deadline (CLOCK_MONOTONIC ns), at least 0. */
static int ms_left(uint64_t deadline)
{
	uint64_t now = sys_mono_ns();

	return now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
}

int proto_call(int sock, void *req, size_t req_size, void *reply, size_t reply_size,
	       int *fds, unsigned max_fds, unsigned *ret_n_fds, int timeout_ms,
	       proto_stale_fn stale, void *stale_user)
{
	union {
		struct proto_reply r;
		char bytes[TAKT_PROTO_MAX_MSG];
	} buf;
	const struct proto_hdr *rh = req;
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	int got[TAKT_PROTO_MAX_FDS];
	uint64_t deadline;
	unsigned nf;
	long n;
	int r;

	deadline = sys_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	r = proto_send(sock, req, req_size, NULL, 0);
	if (r < 0)
		return r == -EPIPE || r == -ECONNRESET ? -ENOTCONN : r;
	for (;;) {
		do
			r = poll(&pfd, 1, ms_left(deadline));
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			return r == 0 ? -ETIMEDOUT : -errno;
		nf = 0;
		n = proto_recv(sock, &buf, sizeof(buf), got, TAKT_PROTO_MAX_FDS, &nf);
		if (n == 0)
			return -ENOTCONN;
		if (n < 0)
			return (int)n;
		/* A reply to an earlier request whose caller gave up waiting: it
		 * must not answer this one. The caller may undo what it did. */
		if (n >= (long)sizeof(buf.r) && buf.r.hdr.magic == TAKT_PROTO_MAGIC &&
		    buf.r.hdr.req_id != rh->req_id) {
			if (stale)
				stale(stale_user, &buf.r, (size_t)n, got, nf);
			close_fds(got, nf);
			continue;
		}
		break;
	}
	r = proto_reply_check(&buf.r, n, req, reply_size);
	if (r < 0 || nf > max_fds) {
		close_fds(got, nf);
		nf = 0;
		r = r < 0 ? r : -EPROTO;
	}
	if (r == 0 || (size_t)n <= reply_size)
		memcpy(reply, &buf, (size_t)n < reply_size ? (size_t)n : reply_size);
	if (nf)
		memcpy(fds, got, nf * sizeof(int));
	if (ret_n_fds)
		*ret_n_fds = nf;
	return r;
}
