/*
 * zdtm_run DIR TEST [ARGS...]: the application of an rctr instance that runs one zdtm test.
 *
 * A zdtm test daemonizes: its first process exits once the test proper (a child that calls
 * setsid) is ready. An instance's application must stay alive, and the checkpoint dumps the
 * application's process tree, so this program stays as the application: it becomes a child
 * subreaper (the daemonized test is re-parented to it, not to the container's init), runs
 * the test in DIR, and waits until every descendant has exited.
 *
 * On the host it also wraps `criu restore --restore-detached`, which then re-parents the
 * restored test to it. With $ZDTM_RUN_READY set, that file is created once the first child
 * (the test's starter, or CRIU) has exited successfully.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int status;
	pid_t child;

	if (argc < 3) {
		fprintf(stderr, "usage: zdtm_run DIR TEST [ARGS...]\n");
		return 2;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1)) {
		perror("zdtm_run: PR_SET_CHILD_SUBREAPER");
		return 1;
	}
	if (chdir(argv[1])) {
		perror(argv[1]);
		return 1;
	}
	child = fork();
	if (child < 0) {
		perror("zdtm_run: fork");
		return 1;
	}
	if (child == 0) {
		execv(argv[2], argv + 2);
		perror(argv[2]);
		_exit(127);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "zdtm_run: %s did not start (status 0x%x)\n", argv[2], status);
		return 1;
	}
	if (getenv("ZDTM_RUN_READY")) {
		int fd = open(getenv("ZDTM_RUN_READY"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd >= 0)
			close(fd);
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return 0;
}
