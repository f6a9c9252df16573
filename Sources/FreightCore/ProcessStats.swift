#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Resource use of this process, for status and benchmarks.
public enum ProcessStats {
    /// Highest resident memory so far, in bytes: the process's own peak (`VmHWM`), which starts afresh at exec.
    /// (`getrusage`'s `ru_maxrss` carries over the peak of the process that forked this one.)
    public static func peakResidentBytes() -> UInt64 {
        if let kilobytes = statusField("VmHWM:") { return kilobytes * 1024 }
        var usage = rusage()
        #if canImport(Glibc)
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
            return UInt64(usage.ru_maxrss) * 1024
        #else
            getrusage(RUSAGE_SELF, &usage)
            return UInt64(usage.ru_maxrss)
        #endif
    }

    /// A `kB` field of /proc/self/status.
    private static func statusField(_ name: String) -> UInt64? {
        guard let text = procFile("/proc/self/status", bytes: 8192),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) })
        else { return nil }
        return line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
    }

    /// Resident memory now, in bytes (from /proc/self/statm; 0 where there is none).
    public static func residentBytes() -> UInt64 { residentBytes(ofProcess: "self") }

    /// Resident memory of another process of this machine (`/proc/PID/statm`), in bytes; 0 when it is gone.
    public static func residentBytes(of pid: Int32) -> UInt64 { residentBytes(ofProcess: "\(pid)") }

    private static func residentBytes(ofProcess process: String) -> UInt64 {
        guard let text = procFile("/proc/\(process)/statm", bytes: 128) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = UInt64(fields[1]) else { return 0 }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// User plus system CPU time used so far, in seconds.
    public static func cpuSeconds() -> Double {
        var usage = rusage()
        #if canImport(Glibc)
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1_000_000 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// User plus system CPU time process `pid` used so far, in seconds (`/proc/PID/stat`); 0 when it is gone.
    public static func cpuSeconds(of pid: Int32) -> Double {
        guard let text = procFile("/proc/\(pid)/stat", bytes: 1024), let end = text.lastIndex(of: ")") else { return 0 }
        // After the command's closing parenthesis: the state is field 3, utime 14 and stime 15.
        let fields = text[text.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The start of a /proc file as text.
    private static func procFile(_ path: String, bytes size: Int) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: size)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: bytes.prefix(count), as: UTF8.self)
    }
}
