/* The local pause image: containerd's sandbox image and warmpool's placeholder container in the
 * real-node tests. It sleeps until SIGTERM or SIGINT and then exits 0 at once (so a preempted
 * placeholder frees its room at once); it reaps children, as the sandbox's PID 1 may have to.
 * Built with `gcc -static -O2` by tests/cluster/images.sh. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {0}, child = {0};
    term.sa_handler = on_term;
    sigaction(SIGTERM, &term, 0);
    sigaction(SIGINT, &term, 0);
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &child, 0);
    for (;;) {
        pause();
    }
}
