/*
 * sysvtool: SysV IPC from inside test containers (built static: gcc -static -O2).
 *
 * Every operation prints exactly one line on stdout, success or failure, and exits 0 on
 * success, 1 when the call failed, 2 on a usage error (message on stderr). Keys are decimal
 * or 0x hex and are printed in decimal.
 *
 *   msg-create KEY          msgget(KEY, IPC_CREAT|0666)   -> msg-create key=K id=N
 *   msg-send KEY TEXT       msgsnd(type 1) to KEY's queue  -> msg-send key=K id=N bytes=B
 *   msg-recv KEY [SECS]     msgrcv any type; without SECS (or 0) IPC_NOWAIT, else blocking
 *                           for at most SECS seconds       -> msg-recv key=K id=N text=TEXT
 *   msg-get KEY             msgget(KEY, 0)                 -> msg-get key=K id=N
 *   msg-rm KEY              msgctl(IPC_RMID)               -> msg-rm key=K id=N
 *   shm-create KEY SIZE     shmget(KEY, SIZE, IPC_CREAT|0666) -> shm-create key=K id=N size=S
 *   shm-get KEY             shmget(KEY, 0, 0)              -> shm-get key=K id=N
 *   shm-rm KEY              shmctl(IPC_RMID)               -> shm-rm key=K id=N
 *   sem-create KEY NSEMS    semget(KEY, NSEMS, IPC_CREAT|0666) -> sem-create key=K id=N nsems=S
 *   sem-get KEY             semget(KEY, 0, 0)              -> sem-get key=K id=N
 *   sem-rm KEY              semctl(IPC_RMID)               -> sem-rm key=K id=N
 *   ns                      readlink /proc/self/ns/ipc     -> ipc:[4026532177]
 *   hold                    prints "hold pid=P", sleeps until SIGTERM/SIGINT, exits 0
 *
 * A failed call prints `<call>(key K): <ERRNO NAME>`, e.g. `msgget(key 123): ENOENT`, or
 * `msg-recv key=K: timeout` when a blocking receive saw nothing in time.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#define MAX_TEXT 8192

struct message {
	long mtype;
	char mtext[MAX_TEXT];
};

static const char *prog = "sysvtool";

static void usage(void)
{
	fprintf(stderr,
		"usage: %s msg-create KEY | msg-send KEY TEXT | msg-recv KEY [SECS] | msg-get KEY |"
		" msg-rm KEY | shm-create KEY SIZE | shm-get KEY | shm-rm KEY |"
		" sem-create KEY NSEMS | sem-get KEY | sem-rm KEY | ns | hold\n",
		prog);
	exit(2);
}

static const char *errno_name(int err)
{
	const char *name = strerrorname_np(err);
	return name ? name : "EUNKNOWN";
}

/* Decimal or 0x hex, the whole string, within [min, max]. */
static long long parse_number(const char *what, const char *s, long long min, long long max)
{
	char *end = (char *)s;
	long long v = 0;
	int ok;

	errno = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		unsigned long long u = 0;
		ok = isxdigit((unsigned char)s[2]);
		if (ok)
			u = strtoull(s + 2, &end, 16);
		ok = ok && !errno && !*end && u <= (unsigned long long)max;
		v = (long long)u;
	} else {
		ok = s[0] == '-' || isdigit((unsigned char)s[0]);
		if (ok)
			v = strtoll(s, &end, 10);
		ok = ok && !errno && end != s && !*end;
	}
	if (!ok || v < min || v > max) {
		fprintf(stderr, "%s: bad %s: %s\n", prog, what, s);
		exit(2);
	}
	return v;
}

/* A key as the kernel takes it: any 32-bit value, negative decimal allowed. */
static key_t parse_key(const char *s)
{
	return (key_t)(int)parse_number("key", s, INT_MIN, UINT_MAX);
}

static int fail(const char *call, key_t key)
{
	printf("%s(key %d): %s\n", call, (int)key, errno_name(errno));
	return 1;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void on_alarm(int sig)
{
	(void)sig;
}

static int msg_recv(key_t key, int secs)
{
	static struct message m;
	struct sigaction sa = { 0 };
	ssize_t n;
	int id = msgget(key, 0);

	if (id < 0)
		return fail("msgget", key);
	if (secs > 0) {
		/* No SA_RESTART: the alarm interrupts msgrcv with EINTR. */
		sa.sa_handler = on_alarm;
		sigaction(SIGALRM, &sa, NULL);
		alarm((unsigned)secs);
	}
	n = msgrcv(id, &m, sizeof m.mtext - 1, 0, secs > 0 ? 0 : IPC_NOWAIT);
	alarm(0);
	if (n < 0) {
		if (errno == EINTR) {
			printf("msg-recv key=%d: timeout\n", (int)key);
			return 1;
		}
		return fail("msgrcv", key);
	}
	m.mtext[n] = 0;
	printf("msg-recv key=%d id=%d text=%s\n", (int)key, id, m.mtext);
	return 0;
}

static int msg_send(key_t key, const char *text)
{
	static struct message m;
	size_t len = strlen(text);
	int id = msgget(key, 0);

	if (id < 0)
		return fail("msgget", key);
	if (len > sizeof m.mtext) {
		fprintf(stderr, "%s: text longer than %d bytes\n", prog, MAX_TEXT);
		return 2;
	}
	m.mtype = 1;
	memcpy(m.mtext, text, len);
	if (msgsnd(id, &m, len, IPC_NOWAIT) < 0)
		return fail("msgsnd", key);
	printf("msg-send key=%d id=%d bytes=%zu\n", (int)key, id, len);
	return 0;
}

static int ns(void)
{
	char link[PATH_MAX];
	ssize_t n = readlink("/proc/self/ns/ipc", link, sizeof link - 1);

	if (n < 0) {
		printf("readlink(/proc/self/ns/ipc): %s\n", errno_name(errno));
		return 1;
	}
	link[n] = 0;
	printf("%s\n", link);
	return 0;
}

static int hold(void)
{
	struct sigaction sa = { 0 };

	/* As a container's pid 1, SIGTERM is ignored unless handled. */
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("hold pid=%d\n", (int)getpid());
	fflush(stdout);
	while (!stop)
		pause();
	return 0;
}

/* Removes the object of type `type` ("msg", "shm", "sem") with key `key`. */
static int rm(const char *type, key_t key)
{
	int id, r;

	if (!strcmp(type, "msg")) {
		id = msgget(key, 0);
		if (id < 0)
			return fail("msgget", key);
		r = msgctl(id, IPC_RMID, NULL);
	} else if (!strcmp(type, "shm")) {
		id = shmget(key, 0, 0);
		if (id < 0)
			return fail("shmget", key);
		r = shmctl(id, IPC_RMID, NULL);
	} else {
		id = semget(key, 0, 0);
		if (id < 0)
			return fail("semget", key);
		r = semctl(id, 0, IPC_RMID);
	}
	if (r < 0) {
		char call[16];
		snprintf(call, sizeof call, "%sctl", type);
		return fail(call, key);
	}
	printf("%s-rm key=%d id=%d\n", type, (int)key, id);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd;
	key_t key;
	int id;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		usage();
	cmd = argv[1];

	if (!strcmp(cmd, "ns") && argc == 2)
		return ns();
	if (!strcmp(cmd, "hold") && argc == 2)
		return hold();
	if (argc < 3)
		usage();
	key = parse_key(argv[2]);

	if (!strcmp(cmd, "msg-create") && argc == 3) {
		id = msgget(key, IPC_CREAT | 0666);
		if (id < 0)
			return fail("msgget", key);
		printf("msg-create key=%d id=%d\n", (int)key, id);
		return 0;
	}
	if (!strcmp(cmd, "msg-send") && argc == 4)
		return msg_send(key, argv[3]);
	if (!strcmp(cmd, "msg-recv") && (argc == 3 || argc == 4))
		return msg_recv(key, argc == 4 ? (int)parse_number("seconds", argv[3], 0, 86400) : 0);
	if (!strcmp(cmd, "msg-get") && argc == 3) {
		id = msgget(key, 0);
		if (id < 0)
			return fail("msgget", key);
		printf("msg-get key=%d id=%d\n", (int)key, id);
		return 0;
	}
	if (!strcmp(cmd, "shm-create") && argc == 4) {
		size_t size = (size_t)parse_number("size", argv[3], 1, LLONG_MAX);
		id = shmget(key, size, IPC_CREAT | 0666);
		if (id < 0)
			return fail("shmget", key);
		printf("shm-create key=%d id=%d size=%zu\n", (int)key, id, size);
		return 0;
	}
	if (!strcmp(cmd, "shm-get") && argc == 3) {
		id = shmget(key, 0, 0);
		if (id < 0)
			return fail("shmget", key);
		printf("shm-get key=%d id=%d\n", (int)key, id);
		return 0;
	}
	if (!strcmp(cmd, "sem-create") && argc == 4) {
		int nsems = (int)parse_number("nsems", argv[3], 1, INT_MAX);
		id = semget(key, nsems, IPC_CREAT | 0666);
		if (id < 0)
			return fail("semget", key);
		printf("sem-create key=%d id=%d nsems=%d\n", (int)key, id, nsems);
		return 0;
	}
	if (!strcmp(cmd, "sem-get") && argc == 3) {
		id = semget(key, 0, 0);
		if (id < 0)
			return fail("semget", key);
		printf("sem-get key=%d id=%d\n", (int)key, id);
		return 0;
	}
	if ((!strcmp(cmd, "msg-rm") || !strcmp(cmd, "shm-rm") || !strcmp(cmd, "sem-rm")) &&
	    argc == 3) {
		char type[4] = { cmd[0], cmd[1], cmd[2], 0 };
		return rm(type, key);
	}
	usage();
	return 2;
}
