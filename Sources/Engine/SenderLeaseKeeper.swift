import Dispatcher
import Foundation
public import Store

/// Another process is sending from this number.
public struct SenderBusy: Error, CustomStringConvertible {
    public var lease: SenderLease

    public var description: String {
        let left = max(0, lease.expiresAt - Date().timeIntervalSince1970)
        return """
            sender \(lease.sender) is busy: run '\(lease.run)' (\(lease.holder)) has been sending from it since \
            \(iso8601(lease.acquiredAt) ?? "?"). One billing run per number at a time keeps Meta's limits; wait for it to finish \
            (or pass --wait-for-sender 30m). If that process died, its lease expires in \(Int(left.rounded(.up))) s.
            """
    }
}

/// One billing run per sender number at a time, on every machine sharing the database: a lease in
/// the store, taken before the run is prepared, renewed every third of its time to live while the
/// run sends, given up at the end. A crashed holder stops renewing, so its lease expires.
public final class SenderLeaseKeeper: Sendable {
    public let store: any DispatchStore
    public let sender: String
    public let run: String
    public let holder: String
    public let ttl: Double

    public init(store: any DispatchStore, sender: String, run: String, ttl: Double) {
        self.store = store
        self.sender = sender
        self.run = run
        self.ttl = ttl
        let host = ProcessInfo.processInfo.hostName
        holder = "\(host) pid \(getpid()) #\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Takes the lease, waiting up to `wait` for its holder to give it up; throws `SenderBusy` if it does not.
    public func acquire(wait: Duration = .zero, poll: Duration = .seconds(1)) async throws {
        let deadline = ContinuousClock.now + wait
        while true {
            let lease = try await store.acquireSenderLease(
                sender: sender, holder: holder, run: run, ttl: ttl, at: Date().timeIntervalSince1970)
            if lease.holder == holder { return }
            if Self.holderIsDeadOnThisHost(lease.holder) {
                // A crashed run on this machine (kill -9, power cut of the process): its lease is
                // released at once instead of waiting for it to expire. Only that holder's lease
                // is deleted, so a live process that took it meanwhile keeps it.
                try await store.releaseSenderLease(sender: sender, holder: lease.holder)
                continue
            }
            if ContinuousClock.now + poll > deadline { throw SenderBusy(lease: lease) }
            try await Task.sleep(for: poll)
        }
    }

    /// True when `holder` (`HOST pid N #R`) names this host and no process N is alive here: none
    /// at all, or one that has exited and waits to be reaped (a zombie: `kill -9` of a child its
    /// parent has not waited for yet). A holder on another host, or a pid that is alive (even if
    /// reused), is left to expire.
    static func holderIsDeadOnThisHost(_ holder: String, host: String = ProcessInfo.processInfo.hostName) -> Bool {
        let prefix = host + " pid "
        guard holder.hasPrefix(prefix) else { return false }
        let rest = holder.dropFirst(prefix.count)
        guard let pid = Int32(rest.prefix { $0.isNumber }), pid > 0, pid != getpid() else { return false }
        if kill(pid, 0) != 0 { return errno == ESRCH }
        return isZombie(pid)
    }

    /// Linux: the process's state in `/proc/PID/stat` is `Z` (exited, not yet reaped). Its third
    /// field, after the command name in parentheses (which may itself hold spaces or brackets).
    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].split(separator: " ", maxSplits: 2).first == "Z"
    }

    /// Renews the lease until cancelled. Calls `lost` (and stops) if another process took it,
    /// which happens only if this one could not renew in time (a stall, a lost database).
    public func keep(lost: @Sendable (String) async -> Void) async {
        let interval = Duration.milliseconds(Int64(ttl * 1000 / 3))
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            do {
                let lease = try await store.acquireSenderLease(
                    sender: sender, holder: holder, run: run, ttl: ttl, at: Date().timeIntervalSince1970)
                if lease.holder != holder {
                    await lost("run '\(lease.run)' (\(lease.holder)) took sender \(sender) after this run's lease expired")
                    return
                }
            } catch {
                // The next renewal may succeed; the lease lasts three intervals.
                continue
            }
        }
    }

    public func release() async {
        try? await store.releaseSenderLease(sender: sender, holder: holder)
    }
}
