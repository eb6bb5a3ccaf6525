/*
 * kqlproc: the one static program the fixture guest runs, copied under many
 * names so that every scenario process has a distinct comm.
 *
 *   kqlproc sleep                 pause() forever (identical sleepers)
 *   kqlproc threads N             N threads, all in pause()
 *   kqlproc vfork                 vfork(); the child never execs, so the
 *                                 parent sleeps in D state (vfork_done)
 *   kqlproc zombie                fork a child that exits; never reap it
 *   kqlproc files DIR             open files on DIR at fds 10..12, a pipe
 *                                 at 13/14, then pause()
 *   kqlproc tcp PORT | tcp6 PORT  listen on 0.0.0.0 / :: PORT
 *   kqlproc udp PORT | udp6 PORT  bind on 0.0.0.0 / :: PORT
 *   kqlproc unix PATH             listen on a UNIX stream socket
 *   kqlproc spawn N NAME ARGS…    start N copies of NAME ARGS… and pause()
 *   kqlproc dumpproc [PID…]       print the guest's /proc truth (see below)
 *
 * dumpproc writes records to stdout:
 *   @@ <path>\n<contents>\n@@@\n     for text files
 *   @@hex <path>\n<hex>\n@@@\n        for binary files (cmdline, environ)
 *   @@link <path> <target>\n          for /proc/PID/fd/N links
 * It reads every pid and every thread in /proc, never forking, so the guest's
 * view is printed quickly and the printer itself is one known pid.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void forever(void)
{
	for (;;)
		pause();
}

static void *thread_main(void *arg)
{
	(void)arg;
	forever();
	return NULL;
}

static char buf[1 << 20];

static void dump_file(const char *path, int hex)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	size_t len = 0;
	ssize_t n;
	while (len < sizeof(buf) && (n = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += n;
	close(fd);
	if (hex) {
		printf("@@hex %s\n", path);
		for (size_t i = 0; i < len; i++)
			printf("%02x", (unsigned char)buf[i]);
		printf("\n@@@\n");
	} else {
		printf("@@ %s\n", path);
		fwrite(buf, 1, len, stdout);
		if (len && buf[len - 1] != '\n')
			putchar('\n');
		printf("@@@\n");
	}
}

static int numeric(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static void dump_links(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512], target[4096];
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!numeric(e->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		printf("@@link %s %s\n", path, target);
	}
	closedir(d);
}

static void dump_pid(const char *pid)
{
	static const char *per_thread[] = {"stat", "status", "stack", "wchan", NULL};
	static const char *per_process[] = {"maps", NULL};
	char path[512];
	DIR *d;
	struct dirent *e;

	for (int i = 0; per_process[i]; i++) {
		snprintf(path, sizeof(path), "/proc/%s/%s", pid, per_process[i]);
		dump_file(path, 0);
	}
	snprintf(path, sizeof(path), "/proc/%s/cmdline", pid);
	dump_file(path, 1);
	snprintf(path, sizeof(path), "/proc/%s/environ", pid);
	dump_file(path, 1);
	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	dump_links(path);
	snprintf(path, sizeof(path), "/proc/%s/task", pid);
	d = opendir(path);
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!numeric(e->d_name))
			continue;
		for (int i = 0; per_thread[i]; i++) {
			snprintf(path, sizeof(path), "/proc/%s/task/%s/%s", pid, e->d_name, per_thread[i]);
			dump_file(path, 0);
		}
	}
	closedir(d);
}

static int dumpproc(void)
{
	static const char *global[] = {
		"/proc/mounts", "/proc/modules", "/proc/net/tcp", "/proc/net/tcp6",
		"/proc/net/udp", "/proc/net/udp6", "/proc/net/unix", "/proc/net/dev",
		"/proc/meminfo", "/proc/slabinfo", "/proc/version", "/proc/uptime",
		"/proc/loadavg", "/proc/sys/kernel/hostname",
		"/proc/sys/kernel/domainname", "/proc/sys/kernel/osrelease",
		"/proc/cmdline", "/proc/cpuinfo", "/proc/stat", "/proc/vmstat",
		"/proc/sys/kernel/pid_max", "/proc/sys/kernel/tainted", NULL};
	DIR *d = opendir("/proc");
	struct dirent *e;
	/* Read the pid list once, before printing anything. */
	static char pids[65536][12];
	int n = 0;

	printf("@@self %d\n", getpid());
	while (d && (e = readdir(d)) && n < 65536)
		if (numeric(e->d_name))
			snprintf(pids[n++], sizeof(pids[0]), "%s", e->d_name);
	if (d)
		closedir(d);
	for (int i = 0; i < n; i++)
		dump_pid(pids[i]);
	for (int i = 0; global[i]; i++)
		dump_file(global[i], 0);
	printf("@@end\n");
	fflush(stdout);
	return 0;
}

static int inet_listen(int family, int type, int port)
{
	int s = socket(family, type, 0), one = 1;
	if (s < 0) {
		perror("socket");
		exit(1);
	}
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET6) {
		struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port),
					 .sin6_addr = in6addr_any};
		setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(s, (void *)&a, sizeof(a)) < 0) {
			perror("bind6");
			exit(1);
		}
	} else {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
					.sin_addr.s_addr = htonl(INADDR_ANY)};
		if (bind(s, (void *)&a, sizeof(a)) < 0) {
			perror("bind");
			exit(1);
		}
	}
	if (type == SOCK_STREAM)
		listen(s, 16);
	return s;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "sleep";

	if (!strcmp(mode, "dumpproc"))
		return dumpproc();
	if (!strcmp(mode, "sleep"))
		forever();
	if (!strcmp(mode, "threads")) {
		int n = argc > 2 ? atoi(argv[2]) : 4;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 64 * 1024);
		for (int i = 0; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, &attr, thread_main, NULL)) {
				perror("pthread_create");
				break;
			}
		}
		forever();
	}
	if (!strcmp(mode, "vfork")) {
		pid_t p = vfork();
		if (p == 0)
			forever(); /* the child never execs: the parent stays in D */
		forever();
	}
	if (!strcmp(mode, "zombie")) {
		if (fork() == 0)
			_exit(7);
		forever();
	}
	if (!strcmp(mode, "files")) {
		const char *dir = argc > 2 ? argv[2] : "/tmp";
		char path[256];
		int p[2];
		for (int i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "%s/kql-file-%d", dir, i);
			int fd = open(path, O_RDWR | O_CREAT, 0644);
			if (fd < 0) {
				perror(path);
				exit(1);
			}
			dprintf(fd, "kql fixture file %d\n", i);
			dup2(fd, 10 + i);
			close(fd);
		}
		if (pipe(p) == 0) {
			dup2(p[0], 13);
			dup2(p[1], 14);
			close(p[0]);
			close(p[1]);
		}
		forever();
	}
	if (!strcmp(mode, "tcp") || !strcmp(mode, "tcp6") || !strcmp(mode, "udp") ||
	    !strcmp(mode, "udp6")) {
		int port = argc > 2 ? atoi(argv[2]) : 7777;
		int family = strchr(mode, '6') ? AF_INET6 : AF_INET;
		int type = mode[0] == 't' ? SOCK_STREAM : SOCK_DGRAM;
		inet_listen(family, type, port);
		forever();
	}
	if (!strcmp(mode, "unix")) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", argc > 2 ? argv[2] : "/tmp/kql.sock");
		unlink(a.sun_path);
		if (bind(s, (void *)&a, sizeof(a)) < 0 || listen(s, 4) < 0) {
			perror("unix");
			exit(1);
		}
		forever();
	}
	if (!strcmp(mode, "spawn")) {
		int n = argc > 2 ? atoi(argv[2]) : 1;
		for (int i = 0; i < n; i++)
			if (fork() == 0) {
				execv(argv[3], argv + 3);
				_exit(127);
			}
		forever();
	}
	fprintf(stderr, "kqlproc: unknown mode %s\n", mode);
	return 2;
}
