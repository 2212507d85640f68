import Foundation
import Testing

@testable import Engine

#if canImport(Glibc)
    import Glibc
#endif

/// Whether a lease's holder on this machine is a process that is gone: a crashed run's lease is
/// taken over at once, never a live one's.
struct SenderLeaseHolderTests {
    let host = ProcessInfo.processInfo.hostName

    @Test("a holder that exited and was not yet reaped (a zombie after kill -9) is dead; this process, and another host's, are not")
    func zombieIsDead() throws {
        var pid: pid_t = 0
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { for p in argv { free(p) } }
        #expect(posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ) == 0)
        // Not waited for: it stays a zombie until reaped below.
        var zombie = false
        for _ in 0..<200 where !zombie {
            zombie = SenderLeaseKeeper.isZombie(pid)
            if !zombie { usleep(10_000) }
        }
        #expect(zombie, "pid \(pid) never showed as exited")
        #expect(kill(pid, 0) == 0, "a zombie still answers kill(pid, 0): what the lease check alone took for alive")
        #expect(SenderLeaseKeeper.holderIsDeadOnThisHost("\(host) pid \(pid) #1"))
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        // Reaped: gone altogether, dead all the same.
        #expect(SenderLeaseKeeper.holderIsDeadOnThisHost("\(host) pid \(pid) #1"))
        #expect(!SenderLeaseKeeper.holderIsDeadOnThisHost("\(host) pid \(getpid()) #1"))
        #expect(!SenderLeaseKeeper.holderIsDeadOnThisHost("elsewhere.example pid \(pid) #1"))
        #expect(!SenderLeaseKeeper.isZombie(getpid()))
    }
}
