/// Kiln's own version, and the Firecracker version whose API and command
/// line it implements (integration/api/reference/firecracker-api.yaml).
/// Clients compare Firecracker versions (Kata requires at least 0.21.1), so
/// every version answer leads with the Firecracker one.
public enum KilnVersion {
    public static let kiln = "0.1.0"
    public static let firecracker = "1.17.0-dev"

    /// `kiln --version`: Firecracker's first line (Kata reads its second word,
    /// less a leading "v"), then what the binary really is.
    public static let vmmText = """
        Firecracker v\(firecracker)
        Kiln v\(kiln): implements Firecracker's API and command line at v\(firecracker)

        """

    /// `kiln-jailer --version`, shaped as Firecracker's jailer's.
    public static let jailerText = """
        Jailer v\(firecracker)
        kiln-jailer v\(kiln): implements Firecracker's jailer command line at v\(firecracker)

        """
}
