# Red team: never finish importing.
while True:
    pass
