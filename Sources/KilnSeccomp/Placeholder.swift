// Placeholder until the bundle format lands.
public enum KilnSeccompPlaceholder {}
