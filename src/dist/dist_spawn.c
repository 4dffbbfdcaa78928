/* The world of `ssm train --gpus N` (dist_spawn.h): one machine, N processes, no MPI. The first process (rank 0)
 * starts the others as copies of itself (fork + exec of /proc/self/exe with the same arguments; SSM_DIST_RANK,
 * SSM_DIST_SIZE and SSM_DIST_ID tell each its place and where the NCCL id will be), so each is a fresh process with
 * its own CUDA state, as under mpirun.
 *
 * The id goes through a file of the run directory: rank 0 writes it atomically (a temporary file renamed into
 * place), the others poll for it with a timeout, and rank 0 removes it once the communicator is up (its init is
 * collective: every rank has read it by then). Its name carries rank 0's pid, so a file left by an earlier job
 * is never read.
 *
 * Dying: the started processes die with rank 0 (PR_SET_PDEATHSIG), and rank 0 is their watchdog: a thread waits for
 * them; one killed by a signal, or one that exits before rank 0 reached the end of the job (dist_stop, a barrier),
 * ends the job at once with one line instead of leaving the others in a collective forever. */
#include "dist/dist_spawn.h"
#include "common.h"
#include "dist/dist.h"
#include "dist/dist_nccl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MAX_GPUS = 64 };
static int world_rank, world_size = 1, joined, stopped;
static pid_t children[MAX_GPUS]; /* rank 0: the pid of rank r (r >= 1), 0 once waited for */
static int child_failed;         /* rank 0: one of them exited with an error */
static volatile int job_ending;  /* rank 0 reached dist_stop: exits from here on are expected */
static pthread_t reaper;
static int reaper_running;
static char id_path[4096];

static int env_int(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : -1;
}

int spawn_launched(void) { return env_int("SSM_DIST_SIZE") > 1 && env_int("SSM_DIST_RANK") >= 0; }
int spawn_active(void) { return joined && !stopped; }
int spawn_rank(void) { return spawn_active() ? world_rank : 0; }
int spawn_size(void) { return spawn_active() ? world_size : 1; }

/* mkdir -p: the run directory may not exist yet (run_open makes it later, on rank 0) */
static int make_dirs(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1;; s++) {
        const int end = *s == 0;
        if (*s == '/' || end) {
            *s = 0;
            if (mkdir(p, 0777) && errno != EEXIST) return ssm_error("cannot create %s: %s", p, strerror(errno));
            if (end) return 0;
            *s = '/';
        }
    }
}

static void kill_children(void) {
    for (int r = 1; r < MAX_GPUS; r++)
        if (children[r] > 0) kill(children[r], SIGKILL);
}

/* rank 0 leaving without dist_stop (an error on it alone, die()): the others would wait for it forever */
static void kill_children_at_exit(void) {
    if (!job_ending) kill_children();
    if (id_path[0]) unlink(id_path);
}

static void *reap_children(void *unused) {
    (void)unused;
    for (int alive = world_size - 1; alive > 0;) {
        int st;
        const pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int r = 1;
        while (r < world_size && children[r] != pid) r++;
        if (r == world_size) continue; /* not one of ours */
        children[r] = 0, alive--;
        const int failed = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        if (failed) child_failed = 1;
        /* a barrier ends the job, so a clean exit may beat rank 0 out of it by a moment: wait a little for rank 0 */
        for (int ms = 0; !WIFSIGNALED(st) && !job_ending && ms < 5000; ms += 50) usleep(50 * 1000);
        if (job_ending) continue;
        if (!nccl_claim_end())
            for (;;) pause(); /* a watchdog of dist_nccl.c is ending the job already, with its line */
        char why[160];
        if (WIFSIGNALED(st)) snprintf(why, sizeof why, "rank %d (pid %d) was killed by signal %d", r, pid, WTERMSIG(st));
        else snprintf(why, sizeof why, "rank %d (pid %d) exited with status %d in the middle of the job", r, pid,
                      WEXITSTATUS(st));
        fprintf(stderr, "ssm: %s: ending the job\n", why);
        fflush(stderr);
        kill_children();
        nccl_abort();
        _exit(1);
    }
    return NULL;
}

int spawn_processes(int gpus, const char *run_dir) {
    if (spawn_launched()) return 0; /* a started one: rank 0 checked all this */
    if (gpus < 1 || gpus > MAX_GPUS) return ssm_error("--gpus must be 1 to %d (got %d)", MAX_GPUS, gpus);
    const int have = nccl_gpu_count();
    if (have < 0) return -1;
    if (gpus > have)
        return ssm_error("--gpus %d asks for more GPUs than this machine has (%d)%s", gpus, have,
                         have ? ": give at most that many" : ": train on the CPU (mpirun -np N ... --device cpu)");
    if (gpus == 1) return 0; /* one process: the plain run on cuda:0 */
    if (make_dirs(run_dir)) return -1;
    snprintf(id_path, sizeof id_path, "%s/.nccl-id.%d", run_dir, (int)getpid());
    unlink(id_path);
    char exe[4096];
    const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return ssm_error("--gpus: cannot find this executable (/proc/self/exe): %s", strerror(errno));
    exe[len] = 0;
    char **argv = NULL; /* this process's arguments, from /proc/self/cmdline */
    int argc = 0;
    {
        FILE *f = fopen("/proc/self/cmdline", "rb");
        if (!f) return ssm_error("--gpus: cannot read /proc/self/cmdline: %s", strerror(errno));
        static char cmd[1 << 16];
        const size_t n = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        cmd[n] = 0;
        argv = xcalloc(n + 2, sizeof(char *));
        for (size_t i = 0; i < n; i += strlen(cmd + i) + 1) argv[argc++] = cmd + i;
    }
    const pid_t parent = getpid();
    world_size = gpus;
    atexit(kill_children_at_exit);
    for (int r = 1; r < gpus; r++) {
        fflush(NULL);
        const pid_t pid = fork();
        if (pid < 0) {
            kill_children();
            return ssm_error("--gpus: cannot start process %d: %s", r, strerror(errno));
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* rank 0 gone (even killed): this one too */
            if (getppid() != parent) _exit(1);
            char v[32];
            snprintf(v, sizeof v, "%d", r), setenv("SSM_DIST_RANK", v, 1);
            snprintf(v, sizeof v, "%d", gpus), setenv("SSM_DIST_SIZE", v, 1);
            setenv("SSM_DIST_ID", id_path, 1);
            execv(exe, argv);
            fprintf(stderr, "ssm: --gpus: cannot run %s: %s\n", exe, strerror(errno));
            _exit(127);
        }
        children[r] = pid;
    }
    free(argv);
    setenv("SSM_DIST_RANK", "0", 1);
    char v[32];
    snprintf(v, sizeof v, "%d", gpus), setenv("SSM_DIST_SIZE", v, 1);
    setenv("SSM_DIST_ID", id_path, 1);
    CHECK(pthread_create(&reaper, NULL, reap_children, NULL) == 0, "cannot start the thread that watches ranks");
    reaper_running = 1;
    return 0;
}

/* rank 0: the id into place atomically (a reader sees the whole file or none) */
static int write_id(const char *path, const unsigned char *id) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return ssm_error("cannot write %s: %s", tmp, strerror(errno));
    const int ok = write(fd, id, NCCL_ID_BYTES) == NCCL_ID_BYTES && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path)) return ssm_error("cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* the others: the id once it is there, within SSM_NCCL_TIMEOUT seconds (120 by default here: rank 0 only has to
 * start up) */
static int read_id(const char *path, unsigned char *id) {
    const char *env = getenv("SSM_NCCL_TIMEOUT");
    const double limit = env && atof(env) > 0 ? atof(env) : 120;
    for (double waited = 0;; waited += 0.01) {
        const int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            const ssize_t n = read(fd, id, NCCL_ID_BYTES);
            close(fd);
            if (n == NCCL_ID_BYTES) return 0;
        }
        if (waited > limit)
            return ssm_error("rank %d: no NCCL id from rank 0 in %s after %.0f s: did rank 0 fail?", world_rank, path,
                             limit);
        usleep(10 * 1000);
    }
}

int spawn_start(void) {
    if (joined) return 0;
    world_rank = env_int("SSM_DIST_RANK"), world_size = env_int("SSM_DIST_SIZE");
    const char *path = getenv("SSM_DIST_ID");
    if (!path || !*path) return ssm_error("SSM_DIST_RANK is set but SSM_DIST_ID is not: start ranks with --gpus N");
    snprintf(id_path, sizeof id_path, "%s", path);
    unsigned char id[NCCL_ID_BYTES];
    if (world_rank == 0 ? nccl_new_id(id) || write_id(path, id) : read_id(path, id)) return -1;
    /* rank r on GPU r: --gpus is one machine, and the count was checked against its GPUs */
    if (nccl_start(world_rank, world_size, world_rank, id)) return -1;
    joined = 1;
    if (world_rank == 0) unlink(path), id_path[0] = 0;
    /* the same file, but perhaps rebuilt between rank 0's start and the others' exec: compared as under mpirun */
    const uint64_t mine = dist_build_hash();
    uint64_t root = mine;
    spawn_broadcast(&root, sizeof root);
    int first = root != mine ? world_rank : world_size;
    spawn_allreduce(&first, 1, NCCL_T_INT, NCCL_OP_MIN);
    if (first == world_size) return 0;
    int rc = -2;
    if (first == world_rank)
        rc = ssm_error("rank %d runs a different build of ssm than rank 0 (the executable changed while the job "
                       "started): run it again", world_rank);
    else ssm_error("rank %d runs a different build of ssm than rank 0", first);
    spawn_stop();
    return rc;
}

int spawn_stop(void) {
    if (!joined || stopped) return child_failed;
    int x = 0;
    nccl_host_reduce(&x, 1, NCCL_T_INT, NCCL_OP_SUM); /* a barrier: no rank leaves while rank 0 still works */
    job_ending = 1;
    stopped = 1;
    nccl_stop();
    if (reaper_running) pthread_join(reaper, NULL), reaper_running = 0;
    return child_failed;
}

void spawn_abort(int code) {
    fflush(stderr);
    nccl_abort();
    if (world_rank == 0) kill_children();
    _exit(code);
}

void spawn_allreduce(void *x, size_t n, int type, int op) { nccl_host_reduce(x, n, type, op); }

void spawn_allgather(float *x, size_t n) {
    for (int r = 0; r < world_size; r++) {
        size_t lo, hi;
        dist_shard(n, r, &lo, &hi);
        nccl_host_broadcast(x + lo, (hi - lo) * sizeof(float), r);
    }
}

void spawn_gather(float *all, const float *mine, size_t n) {
    for (int r = 0; r < world_size; r++) {
        size_t lo, hi;
        dist_shard(n, r, &lo, &hi);
        if (r == 0) { /* rank 0's own shard goes nowhere */
            if (world_rank == 0) memcpy(all + lo, mine, (hi - lo) * sizeof(float));
            continue;
        }
        nccl_host_broadcast(world_rank == r ? (void *)mine : world_rank == 0 ? all + lo : NULL,
                                 (hi - lo) * sizeof(float), r);
    }
}

void spawn_broadcast(void *buf, size_t bytes) { nccl_host_broadcast(buf, bytes, 0); }
int dist_spawn(int gpus, const char *run_dir) { return spawn_processes(gpus, run_dir); }
