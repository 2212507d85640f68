import Dispatcher
import Foundation
import Server

// `dispatcher-fuzz TARGET [libFuzzer options] [CORPUS…]`: one of the parsers under libFuzzer.
//
// Built two ways (scripts/fuzz):
// - instrumented (`-DFUZZING`, ASan and coverage, linked with libFuzzer's driver): the fuzzer;
// - plain (`swift build`): replays files through the same entry points (`dispatcher-fuzz csv
//   FILE…`), which is how a finding is reproduced in a debugger.
//
// SwiftPM links an executable with its own `main`, so libFuzzer's `main` cannot be used: this
// one calls `LLVMFuzzerRunDriver` (libclang_rt.fuzzer_no_main) itself.

enum Target: String, CaseIterable {
    case csv, xml, amounts, webhook, jwt

    static let renderer: MessageRenderer? = {
        guard let catalog = try? TemplateCatalog(directory: "templates") else { return nil }
        return try? MessageRenderer(catalog: catalog, templateName: "invoice", defaultLanguage: "es")
    }()

    func run(_ bytes: [UInt8]) {
        switch self {
        case .csv: FuzzTargets.manifest(bytes, format: .csv, renderer: Self.renderer)
        case .xml: FuzzTargets.manifest(bytes, format: .xml, renderer: Self.renderer)
        case .amounts: FuzzTargets.amountsAndPhones(bytes)
        case .webhook: ServerFuzzTargets.webhook(bytes)
        case .jwt: waitFor { await ServerFuzzTargets.jwt(bytes) }
        }
    }
}

/// libFuzzer calls us on its own thread, synchronously: an async target runs in a task of its own
/// while that thread waits (it is not one of the cooperative pool's, so nothing starves).
func waitFor(_ body: @escaping @Sendable () async -> Void) {
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        await body()
        done.signal()
    }
    done.wait()
}

nonisolated(unsafe) var selected = Target.csv

#if FUZZING
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt
#endif

@main
enum DispatcherFuzz {
    static func main() {
        var arguments = CommandLine.arguments
        // The target comes first; libFuzzer's own child processes (-merge, -jobs) are started
        // without it, so it is also passed down in the environment.
        if arguments.count >= 2, Target(rawValue: arguments[1]) != nil {
            setenv("DISPATCHER_FUZZ_TARGET", arguments[1], 1)
            arguments.remove(at: 1)
        }
        guard
            let name = ProcessInfo.processInfo.environment["DISPATCHER_FUZZ_TARGET"]
                ?? getenv("DISPATCHER_FUZZ_TARGET").map({ String(cString: $0) }),
            let target = Target(rawValue: name)
        else {
            FileHandle.standardError.write(
                Data("usage: dispatcher-fuzz \(Target.allCases.map(\.rawValue).joined(separator: "|")) [options] [FILE or CORPUS…]\n".utf8))
            exit(64)
        }
        selected = target
        _ = Target.renderer
        #if FUZZING
            // libFuzzer reads its own options and corpus folders; the target name is not one of them.
            var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
            var argc = CInt(argv.count - 1)
            let status = argv.withUnsafeMutableBufferPointer { buffer -> CInt in
                var base = Optional(buffer.baseAddress!)
                return LLVMFuzzerRunDriver(&argc, &base) { data, size in
                    selected.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
                    return 0
                }
            }
            exit(status)
        #else
            // Replay: every file given, or every file in every folder given.
            var count = 0
            for path in arguments.dropFirst() {
                var isFolder: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder)
                let files =
                    isFolder.boolValue
                    ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
                for file in files {
                    guard let data = FileManager.default.contents(atPath: file) else { continue }
                    target.run(Array(data))
                    count += 1
                }
            }
            print("\(target.rawValue): \(count) inputs replayed, no finding")
        #endif
    }
}
