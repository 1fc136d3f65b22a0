"""The standard library of .ds blocks (nn, attention, moe), imported as "std/NAME.ds".

A package only so that the .ds files ship as package data.
"""
