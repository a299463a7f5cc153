//! The racing worker, a perl program.

/// One racing worker. Builtins only (the VMs of `cargo xtask vm-test` have the perl binary
/// alone): syscall numbers for x86_64. It stops when the file `stop` appears in its directory
/// (or the test is gone), waits for its children and prints what it did.
pub const RACER_PL: &str = r#"
$| = 1;
my ($seed, $index, $dir, @keys) = @ARGV;
srand($seed * 1000 + $index);
my (@att, @fds, %kids, %did);
sub pick { @_ ? $_[int rand @_] : undef }
sub ids {    # the ids /proc/sysvipc lists in this process's namespace
    open(my $f, '<', "/proc/sysvipc/$_[0]") or return ();
    <$f>;
    map { (split)[1] } <$f>;
}
sub rmid {
    my ($kind, $id) = @_;
    my $ok = $kind eq 'msg' ? msgctl($id, 0, 0)
           : $kind eq 'shm' ? shmctl($id, 0, 0)
           :                  semctl($id, 0, 0, 0);
    $did{rmid}++ if $ok;
}
sub get {
    my $kind = pick('msg', 'shm', 'sem');
    my @ids = ids($kind);
    return rmid($kind, pick(@ids)) if @ids >= 24;    # bounded: /proc/sysvipc stays short
    my $key = rand() < 0.5 ? 0 : pick(@keys);
    my $flags = 0o1600 | (rand() < 0.2 ? 0o2000 : 0);    # IPC_CREAT, sometimes IPC_EXCL
    my $id = $kind eq 'msg' ? msgget($key, $flags)
           : $kind eq 'shm' ? shmget($key, 4096 * (1 + int rand 4), $flags)
           :                  semget($key, 1 + int rand 4, $flags);
    $did{get}++ if defined $id;
}
sub attach {
    my $id = pick(ids('shm')) // return;
    my $addr = syscall(30, $id + 0, 0, 0);    # SYS_shmat
    if ($addr != -1) { push @att, $addr; $did{attach}++ }
}
sub detach {
    return unless @att;
    my $addr = splice(@att, int rand @att, 1);
    $did{detach}++ if syscall(67, $addr) == 0;    # SYS_shmdt
}
sub nap { select(undef, undef, undef, $_[0]) }
sub child_with_attachments {
    my $pid = fork() // return;
    if ($pid) { $kids{$pid} = 1; $did{fork}++; return }
    close $_ for @fds;
    nap(rand 0.05);
    syscall(67, pick(@att)) if @att && rand() < 0.5;
    rmid('shm', pick(ids('shm'))) if rand() < 0.3;
    exit 0;
}
sub child_in_new_namespace {    # clone(CLONE_NEWIPC | SIGCHLD), fork semantics
    my $pid = syscall(56, 0x08000011, 0, 0, 0, 0);
    return if $pid < 0;
    if ($pid) { $kids{$pid} = 1; $did{clone}++; return }
    @att = ();
    get() for 1 .. int rand 4;
    attach() if rand() < 0.5;
    rmid('shm', pick(ids('shm'))) if rand() < 0.5;
    nap(rand 0.02);
    exit 0;
}
sub enter {    # setns(fd, CLONE_NEWIPC)
    $did{setns}++ if syscall(308, $_[0], 0x08000000) == 0;
}
sub enter_holder {
    opendir(my $d, "$dir/holders") or return;
    my $name = pick(grep { /^h/ } readdir $d) // return;
    open(my $f, '<', "$dir/holders/$name") or return;    # unmounted meanwhile
    enter(fileno $f);
    close $f;
}

syscall(272, 0x08000000) == 0 or die "unshare: $!";    # never in the host's namespace
my $test = getppid();
while (!-e "$dir/stop" && getppid() == $test) {    # a killed test leaves no storm behind
    my $r = rand 100;
    if    ($r < 28) { get() }
    elsif ($r < 44) { my $k = pick('msg', 'shm', 'sem'); rmid($k, pick(ids($k))) }
    elsif ($r < 54) { attach() if @att < 4 }
    elsif ($r < 61) { detach() }
    elsif ($r < 68) { child_with_attachments() if keys %kids < 3 }
    elsif ($r < 74) { $did{unshare}++ if syscall(272, 0x08000000) == 0 }
    elsif ($r < 80) { enter_holder() }
    elsif ($r < 83) { enter(fileno pick(@fds)) if @fds }
    elsif ($r < 87) { if (@fds < 3 && open(my $f, '<', '/proc/self/ns/ipc')) { push @fds, $f } }
    elsif ($r < 91) { close(splice(@fds, int rand @fds, 1)) if @fds }
    elsif ($r < 95) { child_in_new_namespace() if keys %kids < 3 }
    else            { nap(0.001) }
    while ((my $pid = waitpid(-1, 1)) > 0) { delete $kids{$pid} }    # WNOHANG
    nap(0.0005) if rand() < 0.5;
}
waitpid($_, 0) for keys %kids;
print join(' ', map { "$_=$did{$_}" } sort keys %did), "\n";
"#;
