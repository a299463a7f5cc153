# Builtins only, no modules: the VMs of `cargo xtask vm-test` have the perl binary alone.
$| = 1;
my %kids;    # pid => write end of the pipe the child waits on
my %fds;     # fd number => handle (namespace references)

sub reply { print join(' ', @_), "\n" }
sub failed { my $errno = shift; reply('ERR', $errno + 0) }
sub inum {
    my $link = readlink('/proc/self/ns/ipc') // return 0;
    $link =~ /\[(\d+)\]/ ? $1 : 0;
}

reply('READY', $$, inum());
while (defined(my $line = <STDIN>)) {
    my ($cmd, @a) = split ' ', $line;
    next unless defined $cmd;
    if ($cmd eq 'get') {    # get msg|shm|sem KEY FLAGS SIZE
        my ($type, $key, $flags, $size) = @a;
        my $id = $type eq 'msg' ? msgget($key, $flags)
               : $type eq 'shm' ? shmget($key, $size, $flags)
               :                  semget($key, $size, $flags);
        defined $id ? reply('OK', $id + 0) : failed($!);
    } elsif ($cmd eq 'rm') {    # rm msg|shm|sem ID: IPC_RMID
        my ($type, $id) = @a;
        my $ok = $type eq 'msg' ? msgctl($id, 0, 0)
               : $type eq 'shm' ? shmctl($id, 0, 0)
               :                  semctl($id, 0, 0, 0);
        $ok ? reply('OK') : failed($!);
    } elsif ($cmd eq 'shmat') {    # perl has no shmat builtin: SYS_shmat = 30
        my $addr = syscall(30, $a[0] + 0, 0, 0);
        $addr == -1 ? failed($!) : reply('OK', $addr);
    } elsif ($cmd eq 'shmdt') {    # SYS_shmdt = 67
        syscall(67, $a[0] + 0) == -1 ? failed($!) : reply('OK');
    } elsif ($cmd eq 'fork') {    # a child that inherits the attachments and waits for EOF
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            close $w;
            close $_ for values %kids;
            close $_ for values %fds;
            open STDIN, '<', '/dev/null';
            open STDOUT, '>', '/dev/null';
            my $buf;
            sysread($r, $buf, 1);
            exit 0;
        }
        close $r;
        $kids{$pid} = $w;
        reply('OK', $pid);
    } elsif ($cmd eq 'release') {    # release PID: that child exits, reaped here
        my $w = delete $kids{$a[0]} or do { reply('ERR', 3); next };
        close $w;
        waitpid($a[0], 0);
        reply('OK');
    } elsif ($cmd eq 'setns') {    # setns PATH: SYS_setns = 308, CLONE_NEWIPC
        open(my $f, '<', $a[0]) or do { failed($!); next };
        my $ret = syscall(308, fileno($f), 0x08000000);
        my $errno = $! + 0;
        close $f;
        $ret == -1 ? failed($errno) : reply('OK', inum());
    } elsif ($cmd eq 'unshare') {    # SYS_unshare = 272, CLONE_NEWIPC
        syscall(272, 0x08000000) == -1 ? failed($!) : reply('OK', inum());
    } elsif ($cmd eq 'open') {    # open PATH: hold a namespace by an fd
        open(my $f, '<', $a[0]) or do { failed($!); next };
        $fds{fileno $f} = $f;
        reply('OK', fileno $f);
    } elsif ($cmd eq 'close') {
        my $f = delete $fds{$a[0]} or do { reply('ERR', 9); next };
        close $f;
        reply('OK');
    } elsif ($cmd eq 'exit') {
        for my $pid (keys %kids) { close $kids{$pid}; waitpid($pid, 0) }
        reply('OK');
        exit 0;
    } else {
        reply('ERR', 22);
    }
}
