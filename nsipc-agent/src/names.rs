//! Names for the numbers syscalls take and return: errno values and `*ctl` commands.

/// `IPC_64`: the flag glibc ORs into every ctl command for the 64-bit structures.
const IPC_64: i32 = 0x100;

/// Which kind of SysV IPC object a syscall is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpcObject {
    Msg,
    Shm,
    Sem,
}

#[cfg(test)]
impl IpcObject {
    pub const ALL: [IpcObject; 3] = [IpcObject::Msg, IpcObject::Shm, IpcObject::Sem];
}

/// The name of a `*ctl` command (from include/uapi/linux/{ipc,msg,shm,sem}.h), with `IPC_64`
/// masked off; `None` for a number the kernel does not define.
pub fn ctl_cmd_name(object: IpcObject, cmd: i32) -> Option<&'static str> {
    let common = match cmd & !IPC_64 {
        0 => Some("IPC_RMID"),
        1 => Some("IPC_SET"),
        2 => Some("IPC_STAT"),
        3 => Some("IPC_INFO"),
        _ => None,
    };
    common.or(match (object, cmd & !IPC_64) {
        (IpcObject::Msg, 11) => Some("MSG_STAT"),
        (IpcObject::Msg, 12) => Some("MSG_INFO"),
        (IpcObject::Msg, 13) => Some("MSG_STAT_ANY"),
        (IpcObject::Shm, 11) => Some("SHM_LOCK"),
        (IpcObject::Shm, 12) => Some("SHM_UNLOCK"),
        (IpcObject::Shm, 13) => Some("SHM_STAT"),
        (IpcObject::Shm, 14) => Some("SHM_INFO"),
        (IpcObject::Shm, 15) => Some("SHM_STAT_ANY"),
        (IpcObject::Sem, 11) => Some("GETPID"),
        (IpcObject::Sem, 12) => Some("GETVAL"),
        (IpcObject::Sem, 13) => Some("GETALL"),
        (IpcObject::Sem, 14) => Some("GETNCNT"),
        (IpcObject::Sem, 15) => Some("GETZCNT"),
        (IpcObject::Sem, 16) => Some("SETVAL"),
        (IpcObject::Sem, 17) => Some("SETALL"),
        (IpcObject::Sem, 18) => Some("SEM_STAT"),
        (IpcObject::Sem, 19) => Some("SEM_INFO"),
        (IpcObject::Sem, 20) => Some("SEM_STAT_ANY"),
        _ => None,
    })
}

/// The symbolic name of an errno value the IPC and namespace syscalls can return.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EIDRM => "EIDRM",
        libc::ENOMSG => "ENOMSG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EUSERS => "EUSERS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_commands_are_named_with_ipc64_masked() {
        assert_eq!(ctl_cmd_name(IpcObject::Msg, 0), Some("IPC_RMID"));
        assert_eq!(ctl_cmd_name(IpcObject::Shm, 0x100 | 2), Some("IPC_STAT"));
        assert_eq!(ctl_cmd_name(IpcObject::Shm, 14), Some("SHM_INFO"));
        assert_eq!(ctl_cmd_name(IpcObject::Sem, 16), Some("SETVAL"));
        assert_eq!(ctl_cmd_name(IpcObject::Msg, 16), None);
        assert_eq!(ctl_cmd_name(IpcObject::Sem, 99), None);
    }

    #[test]
    fn errnos_are_named() {
        assert_eq!(errno_name(2), Some("ENOENT"));
        assert_eq!(errno_name(13), Some("EACCES"));
        assert_eq!(errno_name(17), Some("EEXIST"));
        assert_eq!(errno_name(43), Some("EIDRM"));
        assert_eq!(errno_name(4095), None);
    }
}
