public enum KilnPolicyPlaceholder {}
