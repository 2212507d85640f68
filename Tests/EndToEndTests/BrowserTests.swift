import Foundation
import Testing

/// Headless Chromium (Debian's `chromium`), when the machine has it.
let chromium: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// Says loudly, once, that the pages were not looked at in a browser.
let chromiumAbsent: Bool = {
    if chromium == nil {
        FileHandle.standardError.write(
            Data(
                "WARNING: chromium is absent: the report pages are NOT checked in a real browser (apt-get install chromium)\n".utf8))
    }
    return chromium == nil
}()

/// Runs Chromium headless on a page: its console lines (the page's own messages, CSP refusals) and
/// exit status.
func chromiumRun(_ arguments: [String]) async throws -> (status: Int32, console: [String]) {
    let path = try #require(chromium)
    return try await onOwnThread {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments =
            ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"] + arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Never longer than a minute: a hung browser must not hold CI. Its log is read beside it
        // (a full pipe would stall it), and not waited for past its exit (a helper may hold it).
        let pid = process.processIdentifier
        let killer = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: killer)
        let log = LogBox()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            log.set(err.fileHandleForReading.readDataToEndOfFile())
            done.signal()
        }
        process.waitUntilExit()
        killer.cancel()
        _ = done.wait(timeout: .now() + 5)
        let text = String(decoding: log.get(), as: UTF8.self)
        let console = text.split(whereSeparator: \.isNewline).map(String.init).filter {
            $0.contains(":CONSOLE") || $0.contains("Refused to") || $0.contains("Content Security Policy")
        }
        return (process.terminationStatus, console)
    }
}

@Suite("The pages in a real browser (headless Chromium)", .enabled(if: !chromiumAbsent, "chromium is absent (apt-get install chromium)"))
struct BrowserTests {
    @Test("the delivery report (English, Spanish), a landlord's pack and the preview: no console error, A4 when printed, a screenshot each")
    func pages() async throws {
        let folder = try temporaryDirectory()
        let db = "sqlite:" + folder.appendingPathComponent("d.sqlite").path
        let templates = packageRoot.appendingPathComponent("templates").path
        let sent = try await DispatcherProcess.run(
            [
                "send", packageRoot.appendingPathComponent("samples/march-2026.csv").path, "--sandbox", "--db", db, "--templates",
                templates,
                "--out", folder.appendingPathComponent("en").path, "--settle", "5s",
            ],
            in: folder)
        #expect(sent.status == 0, "\(sent.stderr)")
        let spanish = try await DispatcherProcess.run(
            [
                "report", "march-2026", "--db", db, "--templates", templates, "--lang", "es", "--out",
                folder.appendingPathComponent("es").path,
            ],
            in: folder)
        #expect(spanish.status == 0)
        let pack = try await DispatcherProcess.run(
            ["report", "march-2026", "--db", db, "--templates", templates, "--per-landlord"], in: folder)
        #expect(pack.status == 0)
        let preview = try await DispatcherProcess.run(
            [
                "preview", packageRoot.appendingPathComponent("samples/march-2026.csv").path, "--templates", templates, "--ignore-store",
                "--out", folder.appendingPathComponent("preview").path,
            ],
            in: folder)
        #expect(preview.status == 0)

        let pages = [
            "report-en": "en/index.html", "report-es": "es/index.html",
            "landlord-pack": "reports/march-2026/Inmobiliaria-Caribe/index.html", "preview": "preview/index.html",
        ]
        let shots = folder.appendingPathComponent("screenshots")
        try FileManager.default.createDirectory(at: shots, withIntermediateDirectories: true)
        for (name, page) in pages.sorted(by: { $0.key < $1.key }) {
            let url = "file://" + folder.appendingPathComponent(page).path
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent(page).path), "\(name)")
            let png = shots.appendingPathComponent("\(name).png").path
            let shot = try await chromiumRun(["--window-size=1100,2400", "--screenshot=\(png)", url])
            #expect(shot.status == 0, "\(name)")
            #expect(shot.console.isEmpty, "\(name): \(shot.console)")
            let size = (try? FileManager.default.attributesOfItem(atPath: png)[.size] as? Int) ?? 0
            #expect(size > 20_000, "\(name): a screenshot of \(size) bytes")
            // Printed: A4 pages (595 × 842 points), as the page's @page asks.
            let pdf = shots.appendingPathComponent("\(name).pdf").path
            let printed = try await chromiumRun(["--no-pdf-header-footer", "--print-to-pdf=\(pdf)", url])
            #expect(printed.status == 0, "\(name)")
            let bytes = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: pdf))) ?? Data(), as: UTF8.self)
            #expect(bytes.hasPrefix("%PDF"), "\(name)")
            #expect(bytes.range(of: #"MediaBox \[0 0 59[45]\.\d+ 84[12]\.\d+\]"#, options: .regularExpression) != nil, "\(name): not A4")
        }
        FileHandle.standardError.write(
            Data(
                "browser: screenshots for review in \(shots.path) (scripts/test removes them after a green run unless DISPATCHER_TEST_KEEP_FILES=1)\n"
                    .utf8))
    }
}

/// A browser's log, handed from the thread that reads it.
final class LogBox: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ new: Data) { lock.withLock { data = new } }
    func get() -> Data { lock.withLock { data } }
}
