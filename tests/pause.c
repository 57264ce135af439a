/* The pause container of the CRI tests' pods: holds the pod's namespaces, reaps what is
 * reparented to it, and exits 0 on SIGINT or SIGTERM. Built static by the tests. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;)
        pause();
}
