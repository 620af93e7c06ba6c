/*
 * scale-ops: one phase of bench/scale.sh, done with plain syscalls in a loop
 * (no process per file), timed from the first to the last call.
 *
 *   scale-ops PHASE DIR N PER_DIR
 *
 * PHASE   create | stat | readdir | unlink
 * DIR     an existing, empty (create) directory on the filesystem under test
 * N       number of files
 * PER_DIR 0: all N files in DIR itself ("flat");
 *         K: files in subdirectories DIR/dNNNNNN of K files each ("tree")
 *
 * create:  mkdir of the subdirectories (tree), then openat(O_CREAT|O_EXCL|
 *          O_WRONLY, 0644) + close of every file (empty files)
 * stat:    fstatat(AT_SYMLINK_NOFOLLOW) of every file by name, in creation
 *          order
 * readdir: opendir/readdir (getdents64) of DIR and every subdirectory,
 *          counting the entries; fails if the count is not N
 * unlink:  unlinkat of every file, then rmdir of the subdirectories (tree)
 *
 * Prints one line on stdout:
 *   ok PHASE N SECONDS
 * or, on the first failing call (the run stops there):
 *   fail PHASE N SECONDS_SO_FAR INDEX ERRNO_NAME message
 * and exits 0 / 1. Nothing else goes to stdout.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *phase;
static long total;
static double t0;

static int fail(long index, const char *what)
{
	int e = errno;
	printf("fail %s %ld %.6f %ld %s %s: %s\n", phase, total, now() - t0,
	       index, strerrorname_np(e) ? strerrorname_np(e) : "E?", what,
	       strerror(e));
	return 1;
}

/* the directory fd that holds file i; opens subdirectories as it goes */
static int dir_of(int root, long i, long per_dir, int *cur_fd, long *cur_dir,
		  int create)
{
	if (per_dir == 0)
		return root;
	long d = i / per_dir;
	if (d == *cur_dir)
		return *cur_fd;
	if (*cur_fd >= 0 && *cur_fd != root)
		close(*cur_fd);
	*cur_fd = -1;
	char name[32];
	snprintf(name, sizeof name, "d%06ld", d);
	if (create && mkdirat(root, name, 0755) != 0)
		return -1;
	int fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	*cur_fd = fd;
	*cur_dir = d;
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s create|stat|readdir|unlink DIR N PER_DIR\n",
			argv[0]);
		return 2;
	}
	phase = argv[1];
	const char *dir = argv[2];
	total = atol(argv[3]);
	long per_dir = atol(argv[4]);
	long ndirs = per_dir ? (total + per_dir - 1) / per_dir : 0;

	int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		t0 = now();
		return fail(-1, "open DIR");
	}
	int cur_fd = -1;
	long cur_dir = -1;
	char name[32];
	struct stat st;

	t0 = now();
	if (strcmp(phase, "create") == 0) {
		for (long i = 0; i < total; i++) {
			int dfd = dir_of(root, i, per_dir, &cur_fd, &cur_dir, 1);
			if (dfd < 0)
				return fail(i, "mkdir/open subdirectory");
			snprintf(name, sizeof name, "f%07ld", i);
			int fd = openat(dfd, name,
					O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC,
					0644);
			if (fd < 0)
				return fail(i, "openat(O_CREAT)");
			if (close(fd) != 0)
				return fail(i, "close");
		}
	} else if (strcmp(phase, "stat") == 0) {
		for (long i = 0; i < total; i++) {
			int dfd = dir_of(root, i, per_dir, &cur_fd, &cur_dir, 0);
			if (dfd < 0)
				return fail(i, "open subdirectory");
			snprintf(name, sizeof name, "f%07ld", i);
			if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
				return fail(i, "fstatat");
		}
	} else if (strcmp(phase, "readdir") == 0) {
		long seen = 0;
		for (long d = 0; d < (per_dir ? ndirs : 1); d++) {
			int fd;
			if (per_dir) {
				snprintf(name, sizeof name, "d%06ld", d);
				fd = openat(root, name,
					    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			} else {
				fd = openat(root, ".",
					    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			}
			if (fd < 0)
				return fail(d, "open directory");
			DIR *dp = fdopendir(fd);
			if (!dp)
				return fail(d, "fdopendir");
			struct dirent *de;
			errno = 0;
			while ((de = readdir(dp)) != NULL) {
				if (de->d_name[0] == 'f')
					seen++;
				errno = 0;
			}
			if (errno != 0)
				return fail(d, "readdir");
			closedir(dp);
		}
		if (seen != total) {
			errno = EIO;
			char msg[96];
			snprintf(msg, sizeof msg, "readdir saw %ld files, want %ld",
				 seen, total);
			return fail(seen, msg);
		}
	} else if (strcmp(phase, "unlink") == 0) {
		for (long i = 0; i < total; i++) {
			int dfd = dir_of(root, i, per_dir, &cur_fd, &cur_dir, 0);
			if (dfd < 0)
				return fail(i, "open subdirectory");
			snprintf(name, sizeof name, "f%07ld", i);
			if (unlinkat(dfd, name, 0) != 0)
				return fail(i, "unlinkat");
		}
		if (cur_fd >= 0)
			close(cur_fd);
		cur_fd = -1;
		for (long d = 0; d < ndirs; d++) {
			snprintf(name, sizeof name, "d%06ld", d);
			if (unlinkat(root, name, AT_REMOVEDIR) != 0)
				return fail(d, "rmdir subdirectory");
		}
	} else {
		fprintf(stderr, "unknown phase %s\n", phase);
		return 2;
	}
	double t = now() - t0;
	printf("ok %s %ld %.6f\n", phase, total, t);
	return 0;
}
