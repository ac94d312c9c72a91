import Foundation
import KilnTestSupport
import Testing

/// One name per concept: a type declared at the top level of two modules
/// (two `Logger`s, two `SleepControl`s) makes every reader of an
/// importing file ask which one is meant. This guard reads the sources
/// rather than the compiled modules, so it also sees executables' and
/// internal types.
enum TopLevelTypeNames {
    /// The type names a Swift file declares at its top level: lines that
    /// start in column 0 with optional attributes and modifiers, then
    /// `struct`, `class`, `enum`, `protocol`, `actor` or `typealias`.
    /// Nested types are indented and so not counted.
    static func declared(in source: String) -> [String] {
        let kinds: Set<Substring> = ["struct", "class", "enum", "protocol", "actor", "typealias"]
        let modifiers: Set<Substring> = [
            "public", "internal", "package", "fileprivate", "private", "final", "open",
            "indirect", "nonisolated",
        ]
        var names: [String] = []
        for line in source.split(separator: "\n", omittingEmptySubsequences: false) {
            guard let first = line.first, first.isLetter || first == "@" else { continue }
            var words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })[...]
            while let word = words.first, word.hasPrefix("@") || modifiers.contains(word) { words = words.dropFirst() }
            guard let kind = words.first, kinds.contains(kind), let rest = words.dropFirst().first else { continue }
            let name = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" })
            if !name.isEmpty { names.append(String(name)) }
        }
        return names
    }

    /// Each name declared in more than one module, with those modules, sorted.
    static func reused(in declarations: [String: [String]]) -> [(name: String, modules: [String])] {
        var modulesByName: [String: Set<String>] = [:]
        for (module, names) in declarations {
            for name in names { modulesByName[name, default: []].insert(module) }
        }
        return modulesByName.filter { $0.value.count > 1 }
            .map { (name: $0.key, modules: $0.value.sorted()) }
            .sorted { $0.name < $1.name }
    }

    /// Every module folder under `Sources/` and the names its Swift files declare.
    static func declarations(sources: String) throws -> [String: [String]] {
        let files = FileManager.default
        var result: [String: [String]] = [:]
        for module in try files.contentsOfDirectory(atPath: sources).sorted() {
            let folder = sources + "/" + module
            guard let walker = files.enumerator(atPath: folder) else { continue }
            var names: [String] = []
            while let relative = walker.nextObject() as? String {
                guard relative.hasSuffix(".swift") else { continue }
                names += declared(in: try String(contentsOfFile: folder + "/" + relative, encoding: .utf8))
            }
            if !names.isEmpty { result[module] = names }
        }
        return result
    }
}

@Test func topLevelDeclarationsAreFoundAndNestedOnesAreNot() {
    let source = """
        import KilnSystem
        public final class SerialDevice: BusDevice, @unchecked Sendable {
            struct Nested {}
        }
        @usableFromInline struct Plain<T> {}
        public protocol Port: AnyObject {}
        indirect enum Tree {}
        public typealias Builder = (Int) -> Int
        actor Worker {}
        // struct InAComment {}
        extension SerialDevice {}
        let structure = 1
        """
    #expect(TopLevelTypeNames.declared(in: source) == ["SerialDevice", "Plain", "Port", "Tree", "Builder", "Worker"])
}

@Test func aNameInTwoModulesIsReportedWithBothModules() {
    let reused = TopLevelTypeNames.reused(in: ["A": ["Logger", "Only"], "B": ["Logger"], "C": ["Other", "Only"]])
    #expect(reused.map(\.name) == ["Logger", "Only"])
    #expect(reused.first?.modules == ["A", "B"])
}

@Test func noTypeNameIsDeclaredInTwoModules() throws {
    let declarations = try TopLevelTypeNames.declarations(sources: ChildProcess.packageRoot() + "/Sources")
    // A scan that silently found nothing would pass: the tree has hundreds.
    #expect(declarations.values.map(\.count).reduce(0, +) > 200, "found \(declarations.count) modules")
    #expect(declarations["KilnMachine"]?.contains("Machine") == true)
    let reused = TopLevelTypeNames.reused(in: declarations)
    #expect(
        reused.isEmpty,
        """
        type names declared in more than one module under Sources/ (rename one; docs/architecture.md, "Code map"):
        \(reused.map { "\($0.name): \($0.modules.joined(separator: ", "))" }.joined(separator: "\n"))
        """)
}
