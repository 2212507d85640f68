// swift-tools-version:6.2
import PackageDescription

/// Settings every Swift target shares, in the style of Hummingbird's own package.
let swiftSettings: [SwiftSetting] = [
    // `any P` must be written out, so existential costs are visible where they are paid.
    .enableUpcomingFeature("ExistentialAny"),
    // A file sees only the modules it imports itself, not those a sibling file imported.
    .enableUpcomingFeature("MemberImportVisibility"),
    // Imports are internal unless marked `public import`: no dependency leaks through our API by accident.
    .enableUpcomingFeature("InternalImportsByDefault"),
    // Our own targets build without a warning (dependencies keep theirs).
    .treatAllWarnings(as: .error),
]

/// `scripts/fuzz` builds with DISPATCHER_FUZZING=1: the modules whose parsers are fuzzed (only
/// those: libFuzzer scans every coverage counter after each input, and the million counters of
/// NIO, BoringSSL and the rest cost 99 % of the time) get AddressSanitizer and libFuzzer's
/// coverage, and `dispatcher-fuzz` links libFuzzer's driver (DISPATCHER_FUZZER_LIB, the toolchain's
/// libclang_rt.fuzzer_no_main). Without the variable nothing changes.
let fuzzing = Context.environment["DISPATCHER_FUZZING"] != nil
let fuzzedSwift: [SwiftSetting] =
    fuzzing
    ? [.unsafeFlags(["-sanitize=address", "-sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp"])] : []
let fuzzedC: [CSetting] =
    fuzzing
    ? [.unsafeFlags(["-fsanitize=address", "-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp"])] : []
let fuzzerLink: [LinkerSetting] =
    fuzzing
    ? [.unsafeFlags(["-sanitize=address", Context.environment["DISPATCHER_FUZZER_LIB"] ?? "", "-lstdc++"])] : []

let package = Package(
    name: "dispatcher",
    // Linux is what we build, test and run (CI: Debian, x86_64). On Apple platforms the floor is
    // macOS 15, for Synchronization's `Mutex` and `Atomic`; that build is not tested.
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dispatcher", targets: ["DispatcherCLI"]),
        .executable(name: "dispatcher-bench", targets: ["DispatcherBenchmarks"]),
        .executable(name: "dispatcher-fuzz", targets: ["DispatcherFuzz"]),
        .library(name: "Dispatcher", targets: ["Dispatcher"]),
        .library(name: "Store", targets: ["Store"]),
        .library(name: "WhatsApp", targets: ["WhatsApp"]),
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Reports", targets: ["Reports"]),
        .library(name: "Server", targets: ["Server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.20.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.0.0"),
    ],
    targets: [
        // Layers, lowest first; a module imports only modules listed before it (scripts/check-layers
        // enforces it, docs/architecture.md draws it): CLibXML2, CXMLReader, Dispatcher, Store,
        // WhatsApp, Engine, Reports, Server, Sandbox, then the executables.
        //
        // libxml2 as the system provides it; its flags come from pkg-config.
        .systemLibrary(
            name: "CLibXML2",
            pkgConfig: "libxml-2.0",
            providers: [.apt(["libxml2-dev"]), .brew(["libxml2"])]
        ),
        // libxml2's streaming reader behind a header that exposes neither libxml2 nor ICU types
        // (Debian's libxml2 headers clash with Foundation's ICU module: see docs/house-style).
        .target(
            name: "CXMLReader",
            dependencies: ["CLibXML2"],
            cSettings: fuzzedC
        ),
        // The pure domain: manifests, invoices, money, phones, templates, rendering. No network, no database.
        .target(
            name: "Dispatcher",
            dependencies: [
                "CXMLReader",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            // Meta's rate cards and the markets of calling codes: data files, compiled into the
            // binary (no bundle to lose when the executable is copied elsewhere). docs/pricing.md.
            resources: [
                .embedInCode("Pricing/RateCards/meta-usd-2026-04-01.csv"),
                .embedInCode("Pricing/RateCards/meta-usd-2026-10-01.csv"),
                .embedInCode("Pricing/RateCards/markets.csv"),
            ],
            swiftSettings: swiftSettings + fuzzedSwift
        ),
        // The store: the protocol, its records, migrations, and the SQLite and PostgreSQL engines.
        .target(
            name: "Store",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API itself, for the passes that read a million rows (`SQLiteColumns`).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Meta's side of our code: the Graph API client, its error classes, webhook JSON and signatures.
        .target(
            name: "WhatsApp",
            dependencies: [
                "Dispatcher",
                "Store",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings + fuzzedSwift
        ),
        // The billing run: prepare, dispatch, pacing, leases, and the one-invoice send behind /send-invoice.
        .target(
            name: "Engine",
            dependencies: [
                "Dispatcher",
                "Store",
                "WhatsApp",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Reports",
            dependencies: [
                "Dispatcher",
                "Store",
                "WhatsApp",
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: swiftSettings
        ),
        // The HTTP server: webhook intake, status API, send API, auth, metrics.
        .target(
            name: "Server",
            dependencies: [
                "Dispatcher",
                "Store",
                "WhatsApp",
                "Engine",
                "Reports",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings + fuzzedSwift
        ),
        .target(
            name: "Sandbox",
            dependencies: [
                "Dispatcher",
                "WhatsApp",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "DispatcherCLI",
            dependencies: [
                "Dispatcher",
                "Store",
                "WhatsApp",
                "Engine",
                "Reports",
                "Server",
                "Sandbox",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "DispatcherBenchmarks",
            dependencies: [
                "Dispatcher",
                "Store",
                "WhatsApp",
                "Engine",
                "Reports",
                "Server",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The parsers under libFuzzer (scripts/fuzz), or replaying files when built plainly.
        .executableTarget(
            name: "DispatcherFuzz",
            dependencies: ["Dispatcher", "Server"],
            swiftSettings: swiftSettings + fuzzedSwift + (fuzzing ? [.define("FUZZING")] : []),
            linkerSettings: fuzzerLink
        ),
        // What the store, webhook and run tests share: the engines they run on and fresh databases.
        .target(
            name: "StoreTesting",
            dependencies: [
                "Store",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/StoreTesting",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DispatcherTests",
            dependencies: ["Dispatcher", "CXMLReader", "StoreTesting"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "StoreTests",
            dependencies: [
                "Store", "StoreTesting", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WhatsAppTests",
            dependencies: [
                "WhatsApp", "Dispatcher",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                // A self-signed certificate for the TLS server the messages client is tried against.
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EngineTests",
            dependencies: ["Engine", "WhatsApp", "Store", "StoreTesting", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "Server",
                "Store",
                "WhatsApp",
                "Dispatcher",
                "StoreTesting",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SandboxTests",
            dependencies: [
                "Sandbox",
                "StoreTesting",
                "Dispatcher",
                "Store",
                "WhatsApp",
                "Engine",
                "Server",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ReportsTests",
            dependencies: ["Reports", "Dispatcher", "Store", "WhatsApp", "StoreTesting"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EndToEndTests",
            // Depends on the executable so that `swift test` builds it before running these tests.
            dependencies: ["DispatcherCLI", "StoreTesting"],
            swiftSettings: swiftSettings
        ),
    ]
)
