/*
 * exec_profile: a QEMU TCG plugin that records what the guest executed, for the cycle estimate
 * in xtask/src/cycles (which prices it with the Cortex-M4 timings).
 *
 * For every translation block it counts executions and "taken exits" (the next block executed
 * did not start where this one falls through: its last instruction branched), separately for
 * each phase. A phase is set by the guest calling a marker: the firmware's marker table
 * (`l1sparse_marks`, one 2-byte `bx lr` per marker) starts at `marks=ADDR`; executing entry k
 * switches to phase k + 1 (phase 0 is everything before the first marker).
 *
 * Arguments: marks=ADDR (hex), nmarks=N, out=PATH.
 * Output (text, one block per line, written at exit):
 *   block PHASE EXECS TAKEN ADDR1 ADDR2 ...    (the addresses of its instructions, hex)
 *   marker K EXECS
 *
 * Debian's QEMU 7.2 loads plugins but ships no qemu-plugin.h, so the few declarations used here
 * are written out below; they follow plugin API version 1 (QEMU 4.2 to 7.2).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- The QEMU plugin API, version 1 (only what this plugin calls). --- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* not read */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* --- The profile. --- */
#define MAX_PHASES 64

struct block {
    uint64_t vaddr;
    uint64_t fallthrough; /* the address after its last instruction */
    int marker;           /* the marker this block is, or -1 */
    size_t n;
    uint32_t *addrs;
    uint64_t execs[MAX_PHASES];
    uint64_t taken[MAX_PHASES];
    struct block *next; /* all blocks, for the report */
};

static struct block *blocks;
static struct block *last;
static unsigned phase, last_phase;
static uint64_t marks, nmarks;
static uint64_t marker_execs[MAX_PHASES];
static const char *out_path;

/* One vCPU (the Cortex-M machines have one), so the callbacks need no locking. */
static void block_exec(unsigned int vcpu, void *udata)
{
    struct block *b = udata;
    (void)vcpu;
    if (last && b->vaddr != last->fallthrough) {
        last->taken[last_phase]++;
    }
    if (b->marker >= 0) {
        phase = (unsigned)b->marker + 1;
        marker_execs[b->marker]++;
    }
    b->execs[phase]++;
    last = b;
    last_phase = phase;
}

static void block_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct block *b = calloc(1, sizeof *b);
    if (!b || n == 0 || !(b->addrs = calloc(n, sizeof *b->addrs))) {
        qemu_plugin_outs("exec_profile: out of memory\n");
        abort();
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        b->addrs[i] = (uint32_t)qemu_plugin_insn_vaddr(insn);
        b->fallthrough = qemu_plugin_insn_vaddr(insn) + qemu_plugin_insn_size(insn);
    }
    b->marker = -1;
    if (nmarks && b->vaddr >= marks && b->vaddr < marks + 2 * nmarks && (b->vaddr - marks) % 2 == 0) {
        b->marker = (int)((b->vaddr - marks) / 2);
    }
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, block_exec, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void write_profile(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        qemu_plugin_outs("exec_profile: cannot write the profile\n");
        return;
    }
    for (struct block *b = blocks; b; b = b->next) {
        for (unsigned p = 0; p < MAX_PHASES; p++) {
            if (!b->execs[p] && !b->taken[p]) {
                continue;
            }
            fprintf(f, "block %u %" PRIu64 " %" PRIu64, p, b->execs[p], b->taken[p]);
            for (size_t i = 0; i < b->n; i++) {
                fprintf(f, " %" PRIx32, b->addrs[i]);
            }
            fputc('\n', f);
        }
    }
    for (uint64_t k = 0; k < nmarks; k++) {
        fprintf(f, "marker %" PRIu64 " %" PRIu64 "\n", k, marker_execs[k]);
    }
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "marks=", 6)) {
            marks = strtoull(argv[i] + 6, NULL, 16);
        } else if (!strncmp(argv[i], "nmarks=", 7)) {
            nmarks = strtoull(argv[i] + 7, NULL, 10);
        } else if (!strncmp(argv[i], "out=", 4)) {
            out_path = argv[i] + 4;
        } else {
            fprintf(stderr, "exec_profile: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (!out_path || nmarks + 1 > MAX_PHASES) {
        fprintf(stderr, "exec_profile: needs out=PATH and at most %d markers\n", MAX_PHASES - 1);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, block_trans);
    qemu_plugin_register_atexit_cb(id, write_profile, NULL);
    return 0;
}
