import KilnPolicy
print("kiln-policy: not yet")
