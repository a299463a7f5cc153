//! Where in the kernel a tracked pointer's `kfree` is called from, so that the probes' kfree
//! program can ignore every other kfree on the machine before touching its map.
//!
//! The tracepoint's `call_site` is kfree's return address. The frees the probes watch are:
//! kernel: ipc/namespace.c: static void free_ipc_ns(struct ipc_namespace *ns) ... kfree(ns),
//!   called from static void free_ipc(struct work_struct *unused) (5.16+; put_ipc_ns before);
//! kernel: ipc/shm.c: static void shm_rcu_free(struct rcu_head *head) ... kfree(shp),
//!   an RCU callback, called from kernel/rcu/tree.c: static void rcu_do_batch(struct rcu_data *rdp).
//! Both end in a tail call to kfree, so the return address is usually in their caller's body
//! (seen on 6.18: `rcu_do_batch` and `free_ipc`); a compiler that keeps the call puts it in
//! their own. Each function's range runs to the next symbol, which also covers the
//! `.part`/`.cold` pieces listed under the same name.
//!
//! One more caller stands for something else: a kfree from
//! kernel: ipc/mqueue.c: static void mqueue_evict_inode(struct inode *inode) ... kfree(info->node_cache)
//! means a POSIX message queue ended; its pieces are also handed over on their own.

use nsipc_common::CodeRanges;

/// What must be found for the filter to be safe, each a set of alternatives (a function can be
/// inlined into another, or named differently on older kernels): one name of every group.
const CALLERS: &[&[&str]] = &[
    &["free_ipc", "free_ipc_ns", "put_ipc_ns"],
    &["shm_rcu_free"],
    &["rcu_do_batch"],
];

/// The function whose kfree calls mean that a message queue ended. Not required: without it
/// the filter still works, and the agent finds ended queues by looking.
const MQUEUE_EVICT: &str = "mqueue_evict_inode";

/// The filter the kfree program gets, and the functions it covers (empty: no filter).
#[derive(Debug, PartialEq, Eq)]
pub struct KfreeCallers {
    pub ranges: CodeRanges,
    pub functions: Vec<String>,
    /// The ranges of [`MQUEUE_EVICT`]'s pieces, within `ranges` (nowhere without a filter).
    pub mqueue_evict: CodeRanges,
}

impl KfreeCallers {
    /// From /proc/kallsyms; no filter when it cannot be read.
    pub fn from_kallsyms() -> Self {
        match std::fs::read_to_string("/proc/kallsyms") {
            Ok(symbols) => Self::from_symbols(&symbols),
            Err(_) => Self::everywhere(),
        }
    }

    fn everywhere() -> Self {
        Self {
            ranges: CodeRanges::EVERYWHERE,
            functions: Vec::new(),
            mqueue_evict: CodeRanges::NOWHERE,
        }
    }

    /// From the text of /proc/kallsyms (`address type name [module]` per line). No filter when a
    /// group has no function here, addresses are hidden (kptr_restrict shows zeros), or there
    /// are more pieces than ranges: a missed free would lose a destroy for good, a filter
    /// left off only costs time.
    pub fn from_symbols(symbols: &str) -> Self {
        let text_symbols = symbols.lines().filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            let name = fields.next()?;
            // Module symbols carry a fourth field; the callers are all in the core kernel.
            let in_core = fields.next().is_none();
            (in_core && matches!(kind, "t" | "T")).then_some((address, name))
        });
        // (address, name, name without its `.part.0`-style suffix) of each caller piece.
        let mut starts: Vec<(u64, &str, &str)> = Vec::new();
        let mut all_addresses = Vec::new();
        for (address, name) in text_symbols {
            all_addresses.push(address);
            let base = name.split('.').next().unwrap_or(name);
            if base == MQUEUE_EVICT || CALLERS.iter().any(|group| group.contains(&base)) {
                starts.push((address, name, base));
            }
        }
        all_addresses.sort_unstable();
        all_addresses.dedup();
        // Each piece runs to the next symbol; None when one has no end or no address.
        let ranges_of = |pieces: &mut dyn Iterator<Item = u64>| -> Option<CodeRanges> {
            let mut ranges = CodeRanges::NOWHERE;
            for (slot, start) in pieces.enumerate() {
                let next = all_addresses.partition_point(|&address| address <= start);
                let end = *all_addresses.get(next)?;
                *ranges.ranges.get_mut(slot)? = [(start != 0).then_some(start)?, end];
            }
            Some(ranges)
        };
        // The queues' ends are told apart by their call site whether or not the other
        // callers filter anything: with no filter, every kfree comes to that check.
        let mqueue_evict = ranges_of(
            &mut starts
                .iter()
                .filter(|(_, _, base)| *base == MQUEUE_EVICT)
                .map(|&(address, _, _)| address),
        )
        .unwrap_or(CodeRanges::NOWHERE);
        let every_group_found = CALLERS
            .iter()
            .all(|group| starts.iter().any(|(_, _, base)| group.contains(base)));
        let filter = every_group_found
            .then(|| ranges_of(&mut starts.iter().map(|&(address, _, _)| address)))
            .flatten();
        match filter {
            Some(ranges) => Self {
                ranges,
                functions: starts.iter().map(|(_, name, _)| name.to_string()).collect(),
                mqueue_evict,
            },
            None => Self {
                mqueue_evict,
                ..Self::everywhere()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS_6_18: &str = "\
ffffffff81407700 t rcu_do_batch
ffffffff81407c40 t rcu_core
ffffffff81a6ba40 t shm_rcu_free
ffffffff81a6ba90 t shm_more_checks
ffffffff81a728e0 t put_ipc_ns.part.0
ffffffff81a72970 t free_ipc
ffffffff81a72b00 T copy_ipcs
ffffffff81a73010 T put_ipc_ns
ffffffff81a73050 t ipcns_get
ffffffff81ab0da0 t mqueue_evict_inode
ffffffff81ab0f00 t mqueue_fs_context_free
ffffffffc0001000 t rcu_do_batch\t[not_the_kernel]
ffffffff82000000 D some_data
";

    #[test]
    fn each_caller_runs_to_the_next_text_symbol() {
        let callers = KfreeCallers::from_symbols(KALLSYMS_6_18);
        assert_eq!(
            callers.functions,
            [
                "rcu_do_batch",
                "shm_rcu_free",
                "put_ipc_ns.part.0",
                "free_ipc",
                "put_ipc_ns",
                "mqueue_evict_inode"
            ]
        );
        assert_eq!(
            callers.mqueue_evict.ranges[..2],
            [[0xffffffff81ab0da0, 0xffffffff81ab0f00], [0, 0]]
        );
        assert_eq!(callers.ranges.ranges[5], callers.mqueue_evict.ranges[0]);
        assert_eq!(
            callers.ranges.ranges[0],
            [0xffffffff81407700, 0xffffffff81407c40]
        );
        assert_eq!(
            callers.ranges.ranges[3],
            [0xffffffff81a72970, 0xffffffff81a72b00]
        );
        assert_eq!(
            callers.ranges.ranges[4],
            [0xffffffff81a73010, 0xffffffff81a73050]
        );
        assert_eq!(callers.ranges.ranges[6], [0, 0]);
        // Inside free_ipc, at its end, just past it, and in the module's rcu_do_batch.
        assert!(callers.ranges.contains(0xffffffff81a72a10));
        assert!(!callers.ranges.contains(0xffffffff81a72b00));
        assert!(!callers.ranges.contains(0xffffffff81407c40));
        assert!(!callers.ranges.contains(0xffffffffc0001000));
    }

    #[test]
    fn no_filter_without_every_caller() {
        let without_rcu: String = KALLSYMS_6_18
            .lines()
            .filter(|line| !line.ends_with(" rcu_do_batch"))
            .map(|line| format!("{line}\n"))
            .collect();
        let callers = KfreeCallers::from_symbols(&without_rcu);
        assert_eq!(callers.ranges, CodeRanges::EVERYWHERE);
        assert!(callers.functions.is_empty());
        // Without a filter every kfree is looked at, and the queues' ends still told apart.
        assert_eq!(
            callers.mqueue_evict.ranges[0],
            [0xffffffff81ab0da0, 0xffffffff81ab0f00]
        );
    }

    #[test]
    fn the_filter_stands_without_the_mqueue_evict_function() {
        let without_mqueue: String = KALLSYMS_6_18
            .lines()
            .filter(|line| !line.ends_with(" mqueue_evict_inode"))
            .map(|line| format!("{line}\n"))
            .collect();
        let callers = KfreeCallers::from_symbols(&without_mqueue);
        assert_eq!(callers.functions.len(), 5);
        assert_eq!(callers.mqueue_evict, CodeRanges::NOWHERE);
    }

    #[test]
    fn no_filter_when_addresses_are_hidden() {
        let hidden: String = KALLSYMS_6_18
            .lines()
            .map(|line| format!("0000000000000000{}\n", &line[16..]))
            .collect();
        let callers = KfreeCallers::from_symbols(&hidden);
        assert_eq!(callers.ranges, CodeRanges::EVERYWHERE);
        assert_eq!(callers.mqueue_evict, CodeRanges::NOWHERE);
    }
}
